//! Search filters built from the configured templates (`user_filter`, `group_search.filter`):
//! each placeholder becomes its value escaped as RFC 4515 requires (`*`, `(`, `)`, `\` and NUL
//! as `\XX`), in a single pass over the template. A value is never scanned for placeholders
//! again, so a DN that happens to contain `{username}` stays that DN. Pure.

use ldap3::ldap_escape;

/// The user search filter for `username`: `{username}` in `template` replaced.
pub fn user_filter(template: &str, username: &str) -> String {
    fill(template, &[("{username}", username)])
}

/// The group search filter for the member `dn` (the user's entry, or a group's when nesting)
/// and the user's `username`: `{dn}` and `{username}` in `template` replaced.
pub fn group_filter(template: &str, dn: &str, username: &str) -> String {
    fill(template, &[("{dn}", dn), ("{username}", username)])
}

/// `template` with every occurrence of each placeholder replaced by its value, escaped.
fn fill(template: &str, values: &[(&str, &str)]) -> String {
    let mut filter = String::with_capacity(template.len() + 32);
    let mut rest = template;
    while let Some(brace) = rest.find('{') {
        filter.push_str(&rest[..brace]);
        rest = &rest[brace..];
        match values.iter().find(|(name, _)| rest.starts_with(name)) {
            Some((name, value)) => {
                filter.push_str(&ldap_escape(*value));
                rest = &rest[name.len()..];
            }
            None => {
                filter.push('{');
                rest = &rest[1..];
            }
        }
    }
    filter.push_str(rest);
    filter
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_escaped() {
        assert_eq!(
            user_filter("(uid={username})", "*)(uid=*"),
            "(uid=\\2a\\29\\28uid=\\2a)"
        );
        assert_eq!(user_filter("(uid={username})", "jana"), "(uid=jana)");
    }

    #[test]
    fn a_value_is_never_scanned_for_placeholders_again() {
        // With two replacements one after the other, a DN containing `{username}` would take
        // the user name into the member value.
        assert_eq!(
            group_filter(
                "(|(member={dn})(memberUid={username}))",
                "cn=x{username},ou=people",
                "jana"
            ),
            "(|(member=cn=x{username},ou=people)(memberUid=jana))"
        );
        assert_eq!(
            group_filter("(member={dn})", "cn={dn}", "u"),
            "(member=cn={dn})"
        );
    }

    #[test]
    fn other_braces_stay() {
        assert_eq!(
            user_filter("(&(x={other})(uid={username}){", "a"),
            "(&(x={other})(uid=a){"
        );
    }
}
