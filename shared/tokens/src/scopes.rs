//! Which scopes the app asks for, which it cannot work without, and which products a site's scopes cover.

use store::Product;

/// Asked for by default. The classic scopes cover users, projects and Confluence; listing group *members* with a
/// classic scope needs the Jira-admin `manage:jira-configuration`, so the narrower granular trio is asked instead;
/// Confluence's v2 `spaces` API only honours the granular `read:space:confluence`. Asking for everything the sync
/// needs now spares every customer a re-consent later (Atlassian only grants new scopes at consent time).
pub const DEFAULT_SCOPES: &[&str] = &[
    "offline_access",
    "read:me",
    "read:jira-user",
    "read:jira-work",
    "read:confluence-space.summary",
    "read:confluence-user",
    "read:confluence-content.summary",
    "read:group:jira",
    "read:user:jira",
    "read:avatar:jira",
    "read:space:confluence",
];

/// Parses a space- or comma-separated scope list.
pub fn parse(list: &str) -> Vec<String> {
    let mut scopes: Vec<String> = Vec::new();
    for scope in list.split([' ', ',', '\n', '\t']).filter(|s| !s.is_empty()) {
        if !scopes.iter().any(|s| s == scope) {
            scopes.push(scope.to_owned());
        }
    }
    scopes
}

pub fn defaults() -> Vec<String> {
    DEFAULT_SCOPES.iter().map(|s| s.to_string()).collect()
}

/// The required scopes that `granted` lacks, in the order they were required.
pub fn missing<'a>(required: &'a [String], granted: &[String]) -> Vec<&'a str> {
    required.iter().filter(|r| !granted.contains(r)).map(String::as_str).collect()
}

/// The products a site's granted scopes reach (classic `…:jira-…`/`…:confluence-…` and granular `…:jira`/`…:confluence`).
pub fn products(site_scopes: &[String]) -> Vec<Product> {
    let mut products = Vec::new();
    if site_scopes.iter().any(|s| s.contains("jira")) {
        products.push(Product::Jira);
    }
    if site_scopes.iter().any(|s| s.contains("confluence")) {
        products.push(Product::Confluence);
    }
    products
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_any_separator_and_drops_duplicates() {
        assert_eq!(parse("a b,c\nc  a"), vec!["a", "b", "c"]);
        assert!(parse(" , ").is_empty());
    }

    #[test]
    fn finds_missing_scopes() {
        let required = parse("offline_access read:me read:jira-user");
        assert_eq!(missing(&required, &parse("read:me")), vec!["offline_access", "read:jira-user"]);
        assert!(missing(&required, &parse("read:jira-user offline_access read:me extra")).is_empty());
    }

    #[test]
    fn maps_scopes_to_products() {
        assert_eq!(products(&parse("read:jira-user read:confluence-user")), vec![Product::Jira, Product::Confluence]);
        assert_eq!(products(&parse("read:space:confluence")), vec![Product::Confluence]);
        assert_eq!(products(&parse("read:group:jira")), vec![Product::Jira]);
        assert!(products(&parse("read:me")).is_empty());
    }
}
