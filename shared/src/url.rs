//! URL helpers for settings: the query string every `*_URL` parser reads, and the
//! password-free form that logs and error messages show.

/// The URL with any password replaced by `***`, for logs and error messages.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}{path}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

/// Splits `url` at its first `?` into what comes before and the query's `key=value`
/// pairs, in order. Empty pairs (`a=1&&b=2`, a trailing `&`) are skipped; a pair without
/// `=` has an empty value. Values are taken as written: courier's options never need
/// percent-decoding.
pub fn split_query(url: &str) -> (&str, Vec<(&str, &str)>) {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let pairs = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').unwrap_or((p, "")))
        .collect();
    (base, pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords_only() {
        assert_eq!(
            redact_url("amqp://guest:secret@h:5672/v"),
            "amqp://guest:***@h:5672/v"
        );
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact_url("sqlite://data/chat.db"), "sqlite://data/chat.db");
        assert_eq!(redact_url("memory"), "memory");
    }

    #[test]
    fn splits_the_query_into_pairs() {
        assert_eq!(split_query("sqs://p"), ("sqs://p", vec![]));
        assert_eq!(split_query("sqs://p?"), ("sqs://p", vec![]));
        assert_eq!(
            split_query("amqp://h/v?prefix=a&&heartbeat&x=1=2&"),
            (
                "amqp://h/v",
                vec![("prefix", "a"), ("heartbeat", ""), ("x", "1=2")]
            )
        );
    }
}
