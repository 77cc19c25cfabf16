//! A private `redis-server` for one test: free port, temporary directory, nothing persisted,
//! killed on drop.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

/// A port no other test of this process was given, free when checked.
pub fn free_port() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let _ = NEXT.compare_exchange(
        0,
        20_000 + (std::process::id() % 20_000) as u16,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    loop {
        let port = NEXT.fetch_add(1, Ordering::SeqCst);
        if port > 60_000 {
            NEXT.store(20_000, Ordering::SeqCst);
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A running Redis owned by the test.
#[derive(Debug)]
pub struct TestRedis {
    child: Child,
    dir: PathBuf,
    extra: Vec<String>,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// `redis://127.0.0.1:<port>`.
    pub url: String,
}

impl TestRedis {
    /// Starts one that keeps nothing on disk; panics with a clear message if `redis-server` is
    /// missing.
    pub fn start() -> Self {
        Self::start_with(&["--appendonly", "no"])
    }

    /// Starts one with `extra` arguments (after port, bind address, `--save ""` and its own
    /// directory).
    pub fn start_with(extra: &[&str]) -> Self {
        let extra: Vec<String> = extra.iter().map(|a| a.to_string()).collect();
        for _ in 0..10 {
            let port = free_port();
            let dir = std::env::temp_dir()
                .join(format!("hikyaku-test-redis-{port}-{}", std::process::id()));
            std::fs::create_dir_all(&dir).expect("temp dir");
            if let Some(child) = spawn(port, &dir, &extra) {
                return TestRedis {
                    child,
                    dir,
                    extra,
                    port,
                    url: format!("redis://127.0.0.1:{port}"),
                };
            }
        }
        panic!("could not start redis-server");
    }

    /// Stops the server the way an operator does (`SHUTDOWN`: the append-only file is flushed)
    /// and waits for it to exit.
    pub fn shut_down(&mut self) {
        let _ = Command::new("redis-cli")
            .args(["-p", &self.port.to_string(), "shutdown"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let start = hikyaku_engine::clock::now();
        while start.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the server again on the same port and directory (it reloads what it persisted).
    pub fn start_again(&mut self) {
        self.start_again_with(&[]);
    }

    /// [`TestRedis::start_again`] with `more` arguments for this start only (such as
    /// `--key-load-delay`, which makes loading what was persisted take a while).
    pub fn start_again_with(&mut self, more: &[&str]) {
        let mut args = self.extra.clone();
        args.extend(more.iter().map(|a| a.to_string()));
        for _ in 0..50 {
            if let Some(child) = spawn(self.port, &self.dir, &args) {
                self.child = child;
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("could not start redis-server again on port {}", self.port);
    }

    /// A new connection.
    pub async fn con(&self) -> ::hikyaku_queue_schema::Redis {
        ::hikyaku_queue_schema::RedisClient::open(self.url.as_str())
            .expect("url")
            .connect()
            .await
            .expect("connect to test redis")
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Spawns `redis-server` on `port` and waits until it accepts connections; `None` when it lost
/// the port to another process.
fn spawn(port: u16, dir: &std::path::Path, extra: &[String]) -> Option<Child> {
    let mut child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ])
        .arg("--dir")
        .arg(dir)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server must be installed (apt-get install redis-server)");
    let start = hikyaku_engine::clock::now();
    while start.elapsed() < Duration::from_secs(10) {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            // Someone else's server may hold the port while ours failed to bind.
            std::thread::sleep(Duration::from_millis(50));
            if let Ok(None) = child.try_wait() {
                return Some(child);
            }
            break;
        }
        if let Ok(Some(_)) = child.try_wait() {
            break; // lost the port race
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}
