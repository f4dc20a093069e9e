//! The binary runner: the real `mta-stsd` as a child process.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The path of the real binary built by cargo for these tests.
pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_mta-stsd"))
}

/// `mta-stsd serve` as a child process, logging JSON; killed when dropped.
pub struct ServeProcess {
    child: std::process::Child,
    /// The HTTPS address from the `mta-stsd serving` log line.
    pub addr: SocketAddr,
    /// Every log line so far, for failure messages.
    pub log: Arc<std::sync::Mutex<Vec<String>>>,
    lines: std::sync::mpsc::Receiver<serde_json::Value>,
}

/// A `mta-stsd serve` child that may not be serving yet: its log lines arrive one by one.
pub struct Starting {
    /// Taken by [`Starting::serving`]; killed on drop while still here.
    child: Option<std::process::Child>,
    log: Arc<std::sync::Mutex<Vec<String>>>,
    lines: std::sync::mpsc::Receiver<serde_json::Value>,
}

impl Starting {
    /// The process id, e.g. to send it a signal.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, |c| c.id())
    }

    /// Waits (up to `limit`, reading the log) for a line `matches` accepts.
    pub fn wait_for(
        &mut self,
        limit: Duration,
        matches: impl Fn(&serde_json::Value) -> bool,
    ) -> Option<serde_json::Value> {
        wait_for_line(&self.lines, limit, matches)
    }

    /// Waits (up to 60 s) for the `mta-stsd serving` line with the bound address.
    pub fn serving(mut self) -> ServeProcess {
        let line = self.wait_for(Duration::from_secs(60), |v| {
            v["message"] == "mta-stsd serving"
        });
        let mut child = self.child.take().unwrap();
        let (tx, dead) = std::sync::mpsc::channel();
        drop(tx);
        let lines = std::mem::replace(&mut self.lines, dead);
        match line.and_then(|v| v["https"].as_str().and_then(|a| a.parse().ok())) {
            Some(addr) => ServeProcess {
                child,
                addr,
                log: self.log.clone(),
                lines,
            },
            None => {
                let _ = child.kill();
                let status = child.wait();
                panic!(
                    "mta-stsd serve did not log its address ({status:?}); log:\n{}",
                    self.log.lock().unwrap().join("\n")
                );
            }
        }
    }
}

fn wait_for_line(
    lines: &std::sync::mpsc::Receiver<serde_json::Value>,
    limit: Duration,
    matches: impl Fn(&serde_json::Value) -> bool,
) -> Option<serde_json::Value> {
    let deadline = std::time::Instant::now() + limit;
    loop {
        let left = deadline.checked_duration_since(std::time::Instant::now())?;
        let line = lines.recv_timeout(left).ok()?;
        if matches(&line) {
            return Some(line);
        }
    }
}

impl ServeProcess {
    /// Starts the real binary on `config` and waits (up to 60 s, reading its log, no sleeps)
    /// for the `mta-stsd serving` line with the bound address.
    pub fn start(config: &Path) -> ServeProcess {
        Self::spawn(None, config).serving()
    }

    /// [`ServeProcess::start`] with at most `fds` open file descriptors (`ulimit -n`).
    pub fn start_with_fd_limit(config: &Path, fds: u32) -> ServeProcess {
        let mut command = std::process::Command::new("sh");
        command
            .arg("-c")
            .arg(format!("ulimit -n {fds} && exec \"$0\" \"$@\""))
            .arg(binary())
            .args(["--log-format", "json", "serve", "--config"])
            .arg(config);
        Self::launch(command).serving()
    }

    /// Starts the real binary with `--config config` in the working directory `cwd` (the
    /// parent's when `None`), without waiting for it.
    pub fn spawn(cwd: Option<&Path>, config: &Path) -> Starting {
        let mut command = std::process::Command::new(binary());
        command
            .args(["--log-format", "json", "serve", "--config"])
            .arg(config);
        if let Some(cwd) = cwd {
            command.current_dir(cwd);
        }
        Self::launch(command)
    }

    /// Spawns `command` with its JSON log on a pipe that a thread keeps draining.
    fn launch(mut command: std::process::Command) -> Starting {
        use std::io::BufRead;
        command
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        let mut child = command.spawn().expect("spawn mta-stsd serve");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel::<serde_json::Value>();
        let lines = log.clone();
        // Keeps draining stderr, so the child never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                    let _ = tx.send(v);
                }
                lines.lock().unwrap().push(line);
            }
        });
        Starting {
            child: Some(child),
            log,
            lines: rx,
        }
    }

    /// The log lines so far that match `pred`.
    pub fn log_lines(&self, pred: impl Fn(&serde_json::Value) -> bool) -> Vec<String> {
        let lines = self.log.lock().unwrap();
        lines
            .iter()
            .filter(|l| serde_json::from_str::<serde_json::Value>(l).is_ok_and(|v| pred(&v)))
            .cloned()
            .collect()
    }

    /// The admin listener's address, from its `admin listener up` line (logged before
    /// `serving`, so present once the process serves).
    pub fn admin_addr(&self) -> SocketAddr {
        let lines = self.log_lines(|v| v["message"] == "admin listener up");
        let line: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
        line["admin"].as_str().unwrap().parse().unwrap()
    }

    /// Waits (up to `limit`) for a further log line `matches` accepts.
    pub fn wait_for(
        &self,
        limit: Duration,
        matches: impl Fn(&serde_json::Value) -> bool,
    ) -> Option<serde_json::Value> {
        wait_for_line(&self.lines, limit, matches)
    }

    /// The exit status, if the process has ended.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().unwrap()
    }

    /// SIGKILL: no destructors, no shutdown, no checkpoint.
    pub fn kill_9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Starting {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs the real binary with `args` and `stdin`; returns (exit code, stdout, stderr).
pub fn run_binary(args: &[&std::ffi::OsStr], stdin: &[u8]) -> (i32, String, String) {
    use std::io::Write;
    let mut child = std::process::Command::new(binary())
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn mta-stsd");
    let mut input = child.stdin.take().unwrap();
    let data = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// What `mta-stsd dns --config <config> --json` prints (the real binary; it must succeed).
pub fn dns_json(config: &std::path::Path) -> serde_json::Value {
    let args = [
        std::ffi::OsStr::new("dns"),
        std::ffi::OsStr::new("--config"),
        config.as_os_str(),
        std::ffi::OsStr::new("--json"),
    ];
    let (code, out, err) = run_binary(&args, b"");
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&out).unwrap()
}
