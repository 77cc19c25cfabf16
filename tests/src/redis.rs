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
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// `redis://127.0.0.1:<port>`.
    pub url: String,
}

impl TestRedis {
    /// Starts one; panics with a clear message if `redis-server` is missing.
    pub fn start() -> Self {
        for _ in 0..10 {
            let port = free_port();
            let dir = std::env::temp_dir()
                .join(format!("hikyaku-test-redis-{port}-{}", std::process::id()));
            std::fs::create_dir_all(&dir).expect("temp dir");
            let child = Command::new("redis-server")
                .args([
                    "--port",
                    &port.to_string(),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ])
                .arg("--dir")
                .arg(&dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server must be installed (apt-get install redis-server)");
            let mut r = TestRedis {
                child,
                dir,
                port,
                url: format!("redis://127.0.0.1:{port}"),
            };
            let start = hikyaku_engine::clock::now();
            while start.elapsed() < Duration::from_secs(5) {
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    // Someone else's server may hold the port while ours failed to bind.
                    std::thread::sleep(Duration::from_millis(50));
                    if let Ok(None) = r.child.try_wait() {
                        return r;
                    }
                    break;
                }
                if let Ok(Some(_)) = r.child.try_wait() {
                    break; // lost the port race; try another
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = r.child.kill();
        }
        panic!("could not start redis-server");
    }

    /// A new connection.
    pub async fn con(&self) -> ::redis::aio::MultiplexedConnection {
        ::redis::Client::open(self.url.as_str())
            .expect("url")
            .get_multiplexed_async_connection()
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
