//! Which tag a policy picks among a repository's tags: pure, as Flux's image policies pick them.
//! Tags are filtered by `filterTags.pattern` (what `extract` makes of a match is what is
//! ordered), then ordered by semver (strict `X.Y.Z`, optional `v`; pre-releases only when the
//! range asks for them), alphabetically or numerically; `asc` picks the highest.

use std::cmp::Ordering;

use crate::formats::image_policies::{Filter, Order, Rule, version_of};

/// The tag `rule` picks among `tags` (filtered by `filter`), if any is a candidate.
pub fn latest<'t>(tags: &'t [String], filter: Option<&Filter>, rule: &Rule) -> Option<&'t str> {
    let candidates = tags
        .iter()
        .filter_map(|tag| Some((tag.as_str(), ordered_key(tag, filter)?)));
    match rule {
        Rule::Semver(range) => candidates
            .filter_map(|(tag, key)| Some((tag, version_of(&key)?)))
            .filter(|(_, version)| range.matches(version))
            .max_by(|a, b| a.1.cmp(&b.1).then_with(|| b.0.cmp(a.0)))
            .map(|(tag, _)| tag),
        Rule::Alphabetical(order) => candidates
            .max_by(|a, b| ordered(a.1.cmp(&b.1), *order))
            .map(|(tag, _)| tag),
        Rule::Numerical(order) => candidates
            .filter_map(|(tag, key)| Some((tag, key.parse::<f64>().ok()?)))
            .max_by(|a, b| ordered(a.1.total_cmp(&b.1), *order))
            .map(|(tag, _)| tag),
    }
}

/// Whether `current` comes after `candidate` in the rule's order (a move to `candidate` would
/// go backwards); a current tag the rule cannot order is never "newer".
pub fn is_newer(current: &str, candidate: &str, filter: Option<&Filter>, rule: &Rule) -> bool {
    let (Some(current), Some(candidate)) =
        (ordered_key(current, filter), ordered_key(candidate, filter))
    else {
        return false;
    };
    let order = match rule {
        Rule::Semver(_) => match (version_of(&current), version_of(&candidate)) {
            (Some(a), Some(b)) => a.cmp(&b),
            _ => return false,
        },
        Rule::Alphabetical(order) => ordered(current.cmp(&candidate), *order),
        Rule::Numerical(order) => match (current.parse::<f64>(), candidate.parse::<f64>()) {
            (Ok(a), Ok(b)) => ordered(a.total_cmp(&b), *order),
            _ => return false,
        },
    };
    order == Ordering::Greater
}

/// What a policy orders `tag` by: the filter's key (if the tag is a candidate), else the tag.
fn ordered_key(tag: &str, filter: Option<&Filter>) -> Option<String> {
    match filter {
        Some(filter) => filter.key(tag),
        None => Some(tag.to_string()),
    }
}

fn ordered(ordering: Ordering, order: Order) -> Ordering {
    match order {
        Order::Asc => ordering,
        Order::Desc => ordering.reverse(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::image_policies::Range;
    use regex::Regex;

    fn tags(list: &[&str]) -> Vec<String> {
        list.iter().map(|t| t.to_string()).collect()
    }

    fn semver(range: &str) -> Rule {
        Rule::Semver(Range::parse(range).unwrap())
    }

    #[test]
    fn semver_is_strict_and_takes_pre_releases_only_when_asked() {
        let all = tags(&[
            "0.4.1",
            "v0.4.10",
            "0.4.9",
            "0.5.0",
            "0.4.11-rc.1",
            "latest",
            "12345",
            "0.4",
            "1.0.0",
        ]);
        assert_eq!(latest(&all, None, &semver("~0.4")), Some("v0.4.10"));
        assert_eq!(latest(&all, None, &semver(">=0.4.0 <1.0.0")), Some("0.5.0"));
        assert_eq!(
            latest(&all, None, &semver(">= 0.4.0, < 0.5.0")),
            Some("v0.4.10")
        );
        assert_eq!(
            latest(&all, None, &semver("~0.4.11-rc.0")),
            Some("0.4.11-rc.1")
        );
        assert_eq!(latest(&all, None, &semver("0.4.9")), Some("0.4.9"));
        assert_eq!(latest(&all, None, &semver("0.4.x")), Some("v0.4.10"));
        assert_eq!(latest(&all, None, &semver("0.4.1 - 0.4.9")), Some("0.4.9"));
        assert_eq!(latest(&all, None, &semver("~0.3 || ~1.0")), Some("1.0.0"));
        assert_eq!(latest(&all, None, &semver("~2.0")), None);
        // A numeric tag (a git SHA of digits) is never a version, whatever the range.
        assert_eq!(latest(&tags(&["12345", "999"]), None, &semver("*")), None);
        assert!(Range::parse("~>banana").is_err());
    }

    #[test]
    fn filters_extract_what_is_ordered() {
        let all = tags(&["stg-100", "stg-99", "stg-1000", "dev-5000", "stg-abc"]);
        let filter = Filter {
            pattern: Regex::new(r"^stg-(?P<ts>[0-9]+)$").unwrap(),
            extract: Some("$ts".into()),
        };
        assert_eq!(
            latest(&all, Some(&filter), &Rule::Numerical(Order::Asc)),
            Some("stg-1000")
        );
        assert_eq!(
            latest(&all, Some(&filter), &Rule::Numerical(Order::Desc)),
            Some("stg-99")
        );
        // Alphabetically "99" comes after "1000".
        assert_eq!(
            latest(&all, Some(&filter), &Rule::Alphabetical(Order::Asc)),
            Some("stg-99")
        );
        assert_eq!(
            latest(&all, Some(&filter), &Rule::Alphabetical(Order::Desc)),
            Some("stg-100")
        );
        let versions = Filter {
            pattern: Regex::new(r"^release-(?P<v>.*)$").unwrap(),
            extract: Some("${v}".into()),
        };
        let released = tags(&["release-1.2.3", "release-1.10.0", "1.99.0"]);
        assert_eq!(
            latest(&released, Some(&versions), &semver("^1")),
            Some("release-1.10.0")
        );
    }

    #[test]
    fn a_current_tag_ahead_of_every_candidate_is_newer() {
        assert!(is_newer("0.5.0", "0.4.10", None, &semver("~0.4")));
        assert!(!is_newer("0.4.1", "0.4.10", None, &semver("~0.4")));
        assert!(is_newer("b", "a", None, &Rule::Alphabetical(Order::Asc)));
        assert!(!is_newer("b", "a", None, &Rule::Alphabetical(Order::Desc)));
        assert!(!is_newer("latest", "0.4.10", None, &semver("~0.4")));
    }
}
