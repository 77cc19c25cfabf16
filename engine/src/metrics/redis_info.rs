//! Redis's own figures for the dashboard, read from `INFO all` by the control loop once a
//! second: memory (used and limit), operations per second, commands processed, connected
//! clients, and per command its calls and the microseconds they took (`commandstats`), from
//! which the dashboard draws the average latency per call. On a cluster every master answers:
//! counts are summed, and memory is the master nearest its limit.

use std::collections::BTreeMap;

/// One master's `INFO all`, the fields the engine exports.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RedisInfo {
    /// `used_memory`, bytes.
    pub used_memory: u64,
    /// `maxmemory`, bytes (0: no limit).
    pub max_memory: u64,
    /// `instantaneous_ops_per_sec`.
    pub ops_per_sec: u64,
    /// `total_commands_processed`.
    pub commands: u64,
    /// `connected_clients`.
    pub clients: u64,
    /// Per command (lower case, `cmdstat_<name>`): calls and microseconds spent.
    pub per_command: BTreeMap<String, (u64, u64)>,
}

impl RedisInfo {
    /// Reads the fields from one `INFO` reply; missing ones stay 0.
    pub fn parse(text: &str) -> Self {
        let mut info = RedisInfo::default();
        for line in text.lines() {
            let Some((key, value)) = line.trim_end().split_once(':') else {
                continue;
            };
            let num = || value.trim().parse::<u64>().unwrap_or(0);
            match key {
                "used_memory" => info.used_memory = num(),
                "maxmemory" => info.max_memory = num(),
                "instantaneous_ops_per_sec" => info.ops_per_sec = num(),
                "total_commands_processed" => info.commands = num(),
                "connected_clients" => info.clients = num(),
                _ => {
                    if let Some(name) = key.strip_prefix("cmdstat_") {
                        let field = |want: &str| {
                            value
                                .split(',')
                                .find_map(|kv| kv.strip_prefix(want)?.strip_prefix('='))
                                .and_then(|v| v.parse::<u64>().ok())
                                .unwrap_or(0)
                        };
                        info.per_command
                            .insert(name.to_ascii_lowercase(), (field("calls"), field("usec")));
                    }
                }
            }
        }
        info
    }

    /// The fleet's figures from every master's: counts summed, memory of the master nearest
    /// its limit (or the fullest, without limits).
    pub fn combine(masters: &[RedisInfo]) -> RedisInfo {
        let mut all = RedisInfo::default();
        let fill = |i: &RedisInfo| {
            if i.max_memory > 0 {
                i.used_memory as f64 / i.max_memory as f64
            } else {
                0.0
            }
        };
        if let Some(fullest) = masters.iter().max_by(|a, b| {
            fill(a)
                .total_cmp(&fill(b))
                .then(a.used_memory.cmp(&b.used_memory))
        }) {
            all.used_memory = fullest.used_memory;
            all.max_memory = fullest.max_memory;
        }
        for m in masters {
            all.ops_per_sec += m.ops_per_sec;
            all.commands += m.commands;
            all.clients += m.clients;
            for (name, (calls, usec)) in &m.per_command {
                let e = all.per_command.entry(name.clone()).or_default();
                e.0 += calls;
                e.1 += usec;
            }
        }
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "# Clients\r\nconnected_clients:12\r\n# Memory\r\nused_memory:1048576\r\n\
        used_memory_human:1.00M\r\nmaxmemory:4194304\r\n# Stats\r\n\
        total_commands_processed:98765\r\ninstantaneous_ops_per_sec:4321\r\n\
        # Commandstats\r\ncmdstat_evalsha:calls=100,usec=2500,usec_per_call=25.00,\
        rejected_calls=0,failed_calls=0\r\ncmdstat_XREADGROUP:calls=10,usec=50,usec_per_call=5.00\r\n";

    #[test]
    fn reads_the_fields_it_exports() {
        let i = RedisInfo::parse(SAMPLE);
        assert_eq!(i.used_memory, 1_048_576);
        assert_eq!(i.max_memory, 4_194_304);
        assert_eq!(i.ops_per_sec, 4321);
        assert_eq!(i.commands, 98_765);
        assert_eq!(i.clients, 12);
        assert_eq!(i.per_command.get("evalsha"), Some(&(100, 2500)));
        assert_eq!(i.per_command.get("xreadgroup"), Some(&(10, 50)));
        assert_eq!(
            RedisInfo::parse("garbage\r\nno colon"),
            RedisInfo::default()
        );
    }

    #[test]
    fn masters_sum_and_the_fullest_gives_memory() {
        let a = RedisInfo::parse(SAMPLE);
        let mut b = a.clone();
        b.used_memory = 3_000_000;
        b.max_memory = 4_000_000;
        let all = RedisInfo::combine(&[a.clone(), b]);
        assert_eq!((all.used_memory, all.max_memory), (3_000_000, 4_000_000));
        assert_eq!(all.ops_per_sec, 8642);
        assert_eq!(all.per_command.get("evalsha"), Some(&(200, 5000)));
        assert_eq!(RedisInfo::combine(&[]), RedisInfo::default());
    }
}
