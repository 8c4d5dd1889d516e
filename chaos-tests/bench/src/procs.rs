//! Server processes started by the benchmark: spawned with their pids written
//! to `<run dir>/pids` (the script's trap kills what is left), stopped by pid,
//! and measured through /proc.

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind a loopback port").local_addr().expect("local addr").port()
}

/// One server process, restartable with the same command line.
pub struct Node {
    pub name: String,
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub log: PathBuf,
    pub pid_file: PathBuf,
    pub child: Option<Child>,
}

impl Node {
    pub fn new(name: &str, program: impl AsRef<Path>, args: Vec<String>, run_dir: &Path) -> Node {
        Node {
            name: name.into(),
            program: program.as_ref().to_path_buf(),
            args,
            env: Vec::new(),
            log: run_dir.join(format!("{name}.log")),
            pid_file: run_dir.join("pids"),
            child: None,
        }
    }

    pub fn spawn(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log)?;
        let child = Command::new(&self.program)
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|e| anyhow::anyhow!("starting {} ({}): {e}", self.name, self.program.display()))?;
        record_pid(&self.pid_file, child.id())?;
        self.child = Some(child);
        Ok(())
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn alive(&self) -> bool {
        self.child.is_some()
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then SIGKILL after `grace`.
    pub fn stop(&mut self, grace: Duration) {
        if let Some(mut c) = self.child.take() {
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let until = std::time::Instant::now() + grace;
            while std::time::Instant::now() < until {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn rss_mib(&self) -> Option<f64> {
        self.pid().and_then(rss_mib)
    }

    pub fn cpu_s(&self) -> f64 {
        self.pid().and_then(cpu_s).unwrap_or(0.0)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn record_pid(file: &Path, pid: u32) -> anyhow::Result<()> {
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(file)?;
    writeln!(f, "{pid}")?;
    Ok(())
}

/// Resident set size from /proc/<pid>/status.
pub fn rss_mib(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_rss_kib(&s).map(|kib| kib as f64 / 1024.0)
}

pub fn parse_rss_kib(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// User + system CPU seconds of a process, from /proc/<pid>/stat.
pub fn cpu_s(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let ticks = parse_cpu_ticks(&s)?;
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Some(ticks as f64 / hz)
}

pub fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    // The command name may contain spaces; fields restart after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After ')': state(3) ... utime is field 14, stime 15 (1-based overall).
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// fsync latency of the disk under `dir`: 4 KiB write + fdatasync, `n` times.
pub fn fsync_latency(dir: &Path, n: usize) -> anyhow::Result<crate::stats::Summary> {
    use std::os::unix::io::AsRawFd;
    let path = dir.join("fsync-probe");
    let mut f = std::fs::OpenOptions::new().create(true).write(true).truncate(true).open(&path)?;
    let buf = vec![0x5au8; 4096];
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let t = std::time::Instant::now();
        f.write_all(&buf)?;
        if unsafe { libc::fdatasync(f.as_raw_fd()) } != 0 {
            anyhow::bail!("fdatasync: {}", std::io::Error::last_os_error());
        }
        samples.push(t.elapsed());
    }
    let _ = std::fs::remove_file(&path);
    Ok(crate::stats::Summary::of_samples(&samples))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_parsers() {
        assert_eq!(parse_rss_kib("Name:\tx\nVmRSS:\t  204800 kB\nVmSwap: 0 kB\n"), Some(204_800));
        assert_eq!(parse_rss_kib("Name: x\n"), None);
        let stat = "42 (my (odd) name) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 8 0 1 0 0";
        assert_eq!(parse_cpu_ticks(stat), Some(300));
    }

    #[test]
    fn this_process_is_measurable() {
        let pid = std::process::id();
        assert!(rss_mib(pid).unwrap() > 0.0);
        assert!(cpu_s(pid).is_some());
    }
}
