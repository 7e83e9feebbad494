//! Kubernetes' own rules for names, as its API server applies them. Every name that becomes a
//! path, a label or an object name is checked here first, so a chart or a flag can never
//! name a file outside the state.

/// A DNS label (RFC 1123): namespaces, environments, app directories.
pub fn dns_label(value: &str) -> Result<(), String> {
    if value.is_empty() || value.len() > 63 {
        return Err(format!("`{value}`: must be 1 to 63 characters"));
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        || value.starts_with('-')
        || value.ends_with('-')
    {
        return Err(format!(
            "`{value}`: must be lowercase letters, digits and '-', starting and ending with a letter or digit"
        ));
    }
    Ok(())
}

/// A DNS subdomain (RFC 1123): most object names, API groups.
pub fn dns_subdomain(value: &str) -> Result<(), String> {
    if value.is_empty() || value.len() > 253 {
        return Err(format!("`{value}`: must be 1 to 253 characters"));
    }
    for part in value.split('.') {
        dns_label(part).map_err(|_| {
            format!(
                "`{value}`: must be lowercase letters, digits, '-' and '.', each part starting and ending with a letter or digit"
            )
        })?;
    }
    Ok(())
}

/// What every object name must be, whatever its kind (Kubernetes' path segment rule): not
/// `.` or `..`, without `/` or `%`. Kinds such as RBAC roles allow more than a DNS subdomain
/// (`system:aggregate-to-view`); the API server judges the rest.
pub fn object_name(value: &str) -> Result<(), String> {
    if value.is_empty() || value == "." || value == ".." {
        return Err(format!("`{value}`: not a name"));
    }
    if value.len() > 253 || value.contains(['/', '%', '\0', '\n']) {
        return Err(format!(
            "`{value}`: may not hold '/', '%' or line breaks, nor exceed 253 characters"
        ));
    }
    Ok(())
}

/// A kind: a letter, then letters and digits (`ConfigMap`).
pub fn kind(value: &str) -> Result<(), String> {
    let mut bytes = value.bytes();
    let valid = bytes.next().is_some_and(|b| b.is_ascii_alphabetic())
        && bytes.all(|b| b.is_ascii_alphanumeric())
        && value.len() <= 63;
    valid
        .then_some(())
        .ok_or_else(|| format!("`{value}`: a kind is a letter, then letters and digits"))
}

/// `version` (the core group) or `group/version`.
pub fn api_version(value: &str) -> Result<(), String> {
    let (group, version) = value.rsplit_once('/').unwrap_or(("", value));
    if !group.is_empty() {
        dns_subdomain(group).map_err(|e| format!("API group {e}"))?;
    }
    dns_label(version).map_err(|e| format!("version {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubernetes_names() {
        assert!(dns_label("production").is_ok());
        for bad in ["", "Rel_5_19", "../x", "-a", "a-", &"a".repeat(64), "a.b"] {
            assert!(dns_label(bad).is_err(), "{bad:?}");
        }
        assert!(dns_subdomain("widgets.example.com").is_ok());
        assert!(dns_subdomain("a..b").is_err());
        assert!(object_name("system:aggregate-to-view").is_ok());
        for bad in ["", ".", "..", "../../../../tmp/x", "a/b", "a%2f", "a\nb"] {
            assert!(object_name(bad).is_err(), "{bad:?}");
        }
        assert!(kind("ConfigMap").is_ok());
        for bad in ["", "../x", "Config Map", "1Map"] {
            assert!(kind(bad).is_err(), "{bad:?}");
        }
        assert!(api_version("v1").is_ok() && api_version("apps/v1").is_ok());
        assert!(api_version("../v1").is_err() && api_version("a/b/v1").is_err());
    }
}
