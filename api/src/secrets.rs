//! Where secrets may come from. The token-signing key, DKIM private keys and the database and
//! Redis passwords are read only from files or the environment: a command line is visible to
//! every user of the machine (`ps`, `/proc/*/cmdline`) and lands in shell histories. So a URL
//! flag that carries a password is refused when it was given on the command line (the same URL
//! in `HIKYAKU_DATABASE_URL` / `HIKYAKU_REDIS_URL` is fine), the token key has no flag at all
//! (`HIKYAKU_TOKEN_SECRET` or `--token-secret-file`), and DKIM keys are files by design. `--help`
//! hides the URLs' environment values.
//!
//! Nothing here or elsewhere logs or returns a secret: URLs are never logged, the Redis
//! client's `Debug` hides credentials, API keys are shown once by the CLI and stored hashed.

use clap::parser::ValueSource;
use clap::ArgMatches;

/// Whether `url` carries a password (`scheme://user:password@…` or `scheme://:password@…`,
/// for any of a cluster URL's comma-separated seeds).
pub fn has_password(url: &str) -> bool {
    let Some((_, rest)) = url.split_once("://") else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let in_userinfo = authority.split(',').any(|seed| {
        seed.rsplit_once('@')
            .is_some_and(|(userinfo, _)| userinfo.contains(':'))
    });
    // libpq-style parameters: `?password=…` (or `&password=…`).
    let query = rest.split_once('?').map_or("", |(_, q)| q);
    in_userinfo
        || query
            .split('&')
            .any(|kv| kv.to_ascii_lowercase().starts_with("password="))
}

/// Refuses a password given on the command line in any of the URL arguments `ids` (clap ids:
/// the config fields' names); names the flag and the environment variable to use instead.
pub fn refuse_on_command_line(matches: &ArgMatches, ids: &[(&str, &str)]) -> Result<(), String> {
    for (id, env) in ids {
        let given_as_flag = matches.value_source(id) == Some(ValueSource::CommandLine);
        let url = matches
            .try_get_one::<String>(id)
            .ok()
            .flatten()
            .map(String::as_str)
            .unwrap_or("");
        if given_as_flag && has_password(url) {
            return Err(format!(
                "--{}: a password on the command line is visible to every user of this machine; \
                 put the URL in the environment ({env}) instead",
                id.replace('_', "-")
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_in_urls_are_found() {
        assert!(has_password("postgres://u:pw@db:5432/x"));
        assert!(has_password("redis://:pw@127.0.0.1:6379"));
        assert!(has_password("redis+cluster://a:6379,u:pw@b:6379"));
        assert!(!has_password("postgres://u@db/x"));
        assert!(!has_password("postgres://db/x?user=a:b@c"));
        assert!(has_password(
            "postgres://u@db/x?sslmode=require&password=pw"
        ));
        assert!(has_password("postgres://u@db/x?PASSWORD=pw"));
        assert!(!has_password("redis://127.0.0.1:6379"));
        assert!(!has_password("not a url"));
    }
}
