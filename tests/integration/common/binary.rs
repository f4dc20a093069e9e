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
}

impl ServeProcess {
    /// Starts the real binary on `config` and waits (up to 60 s, reading its log, no sleeps)
    /// for the `mta-stsd serving` line with the bound address.
    pub fn start(config: &Path) -> ServeProcess {
        let mut command = std::process::Command::new(binary());
        command
            .args(["--log-format", "json", "serve", "--config"])
            .arg(config);
        Self::spawn(command)
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
        Self::spawn(command)
    }

    fn spawn(mut command: std::process::Command) -> ServeProcess {
        use std::io::BufRead;
        let mut child = command
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn mta-stsd serve");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel::<SocketAddr>();
        let lines = log.clone();
        // Keeps draining stderr after the address is known, so the child never blocks on a
        // full pipe.
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
                    && v["message"] == "mta-stsd serving"
                    && let Some(addr) = v["https"].as_str().and_then(|a| a.parse().ok())
                {
                    let _ = tx.send(addr);
                }
                lines.lock().unwrap().push(line);
            }
        });
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(addr) => ServeProcess { child, addr, log },
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "mta-stsd serve did not log its address; log:\n{}",
                    log.lock().unwrap().join("\n")
                );
            }
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
