//! A private three-master Redis Cluster for one test: three `redis-server --cluster-enabled yes`
//! on free loopback ports, joined by `redis-cli --cluster create`, killed on drop.

use std::process::Command;
use std::time::Duration;

use crate::redis::TestRedis;

/// A running cluster owned by the test.
#[derive(Debug)]
pub struct TestCluster {
    /// The masters.
    pub nodes: Vec<TestRedis>,
    /// `redis+cluster://127.0.0.1:<port>,…`: the queue URL engines and the API take.
    pub url: String,
}

impl TestCluster {
    /// Starts three masters (no replicas), splits the slots among them and waits until every
    /// node reports the cluster up.
    pub fn start() -> Self {
        let nodes: Vec<TestRedis> = (0..3)
            .map(|_| {
                TestRedis::start_with(&[
                    "--appendonly",
                    "no",
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "5000",
                ])
            })
            .collect();
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("redis-cli must be installed (apt-get install redis-tools)");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let start = hikyaku_engine::clock::now();
        for n in &nodes {
            loop {
                let info = cli(n.port, &["cluster", "info"]);
                if info.contains("cluster_state:ok") {
                    break;
                }
                assert!(
                    start.elapsed() < Duration::from_secs(30),
                    "cluster not up on {}: {info}",
                    n.port
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        TestCluster {
            url: format!("redis+cluster://{}", addrs.join(",")),
            nodes,
        }
    }

    /// How many keys each master holds.
    pub fn key_counts(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .map(|n| cli(n.port, &["dbsize"]).trim().parse().unwrap_or(0))
            .collect()
    }
}

/// `redis-cli -p <port> <args>`'s output.
fn cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}
