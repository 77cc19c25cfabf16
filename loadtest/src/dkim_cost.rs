//! `bench --dkim`: the engine signs every message with a fresh RSA-2048 key, and the box's raw
//! RSA-2048 sign rate (`openssl speed -multi <cores> rsa2048`) is measured beside it, since
//! with signing on that rate is the ceiling of the whole run.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context};

/// Selector of the bench key.
pub const SELECTOR: &str = "bench";

/// Writes a fresh RSA-2048 private key to `path` (PEM), with the `openssl` tool.
pub fn generate_key(path: &Path) -> anyhow::Result<()> {
    let out = Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(path)
        .output()
        .context("running openssl genpkey (install the openssl package)")?;
    if !out.status.success() {
        bail!("openssl genpkey: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// The engine config table signing `domain` with the key at `key`.
pub fn engine_table(domain: &str, key: &Path) -> String {
    format!(
        "[[dkim]]\ndomain = \"{domain}\"\nselector = \"{SELECTOR}\"\nalgorithm = \"rsa-sha256\"\n\
         key_file = {:?}\n\n",
        key.display().to_string()
    )
}

/// RSA-2048 signatures per second of OpenSSL on `cores` processes (`openssl speed`).
pub fn openssl_sign_rate(cores: usize) -> anyhow::Result<f64> {
    let out = Command::new("openssl")
        .args(["speed", "-seconds", "3", "-multi"])
        .arg(cores.max(1).to_string())
        .arg("rsa2048")
        .output()
        .context("running openssl speed")?;
    if !out.status.success() {
        bail!("openssl speed: {}", String::from_utf8_lossy(&out.stderr));
    }
    parse_speed(&String::from_utf8_lossy(&out.stdout))
        .context("no `rsa 2048 bits … sign/s` line in openssl speed's output")
}

/// The sign/s column of the `rsa 2048 bits` line.
fn parse_speed(text: &str) -> Option<f64> {
    let line = text.lines().find(|l| l.starts_with("rsa 2048 bits"))?;
    // rsa 2048 bits <sign s> <verify s> <sign/s> <verify/s>
    let cols: Vec<&str> = line.split_whitespace().collect();
    cols.get(5)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_openssl_speed() {
        let text = "options: bn(64,64)\n                  sign    verify    sign/s verify/s\n\
                    rsa 2048 bits 0.000193s 0.000010s   5187.0  96209.5\n";
        assert_eq!(parse_speed(text), Some(5187.0));
        assert_eq!(parse_speed("nothing here"), None);
    }

    #[test]
    fn engine_table_is_valid_config() {
        let t = engine_table("hikyaku.test", Path::new("/tmp/k.pem"));
        let parsed = hikyaku_engine::EngineConfig::from_toml(&t, "t").expect("valid");
        assert_eq!(parsed.dkim.len(), 1);
        assert_eq!(parsed.dkim[0].selector, SELECTOR);
    }
}
