//! Who the client is behind reverse proxies: the pure decision behind `server.trusted_proxies`.
//!
//! A `Forwarded` (RFC 7239) or `X-Forwarded-For` header is anyone's to write, so it is believed
//! only as far as the hops that wrote it are trusted: starting from the TCP peer, each address
//! that is a trusted proxy hands over to the address it says it received the request from,
//! right to left through the header, and the first address that is not a trusted proxy is the
//! client. Entries a client wrote itself lie further left and are never reached. Without
//! trusted proxies the headers are ignored; a header a trusted proxy sent that cannot be read
//! leaves the client as the last address known for certain.

use std::net::{IpAddr, Ipv6Addr};

use axum::http::HeaderMap;
use axum::http::header::FORWARDED;
use ipnet::IpNet;

const X_FORWARDED_FOR: &str = "x-forwarded-for";

/// The client's address for a request that arrived from `peer` with `headers`.
pub fn client_address(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(&canonical(*ip)));
    if !is_trusted(&peer) {
        return peer;
    }
    // `Forwarded` is the standard; proxies that speak it are asked first.
    let hops = if headers.contains_key(FORWARDED) {
        forwarded_for(headers)
    } else {
        x_forwarded_for(headers)
    };
    let Some(hops) = hops else { return peer };
    let mut client = peer;
    for hop in hops.iter().rev() {
        if !is_trusted(&client) {
            break;
        }
        client = *hop;
    }
    client
}

/// IPv4-mapped IPv6 addresses (`::ffff:192.0.2.1`, what a dual-stack socket reports) compare
/// as the IPv4 address they carry.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

/// Every `X-Forwarded-For` value, in order; `None` when any entry is not an address.
fn x_forwarded_for(headers: &HeaderMap) -> Option<Vec<IpAddr>> {
    let mut hops = Vec::new();
    for value in headers.get_all(X_FORWARDED_FOR) {
        for entry in value.to_str().ok()?.split(',') {
            hops.push(parse_node(entry.trim())?);
        }
    }
    Some(hops)
}

/// The `for=` of every `Forwarded` element, in order; `None` when an element has none or it
/// is not an address (`unknown`, an obfuscated name): the chain cannot be followed past it.
fn forwarded_for(headers: &HeaderMap) -> Option<Vec<IpAddr>> {
    let mut hops = Vec::new();
    for value in headers.get_all(FORWARDED) {
        for element in value.to_str().ok()?.split(',') {
            let node = element.split(';').find_map(|pair| {
                let (name, value) = pair.trim().split_once('=')?;
                name.trim()
                    .eq_ignore_ascii_case("for")
                    .then(|| value.trim().trim_matches('"'))
            })?;
            hops.push(parse_node(node)?);
        }
    }
    Some(hops)
}

/// An address as proxies write it: `192.0.2.1`, `192.0.2.1:4711`, `2001:db8::1`,
/// `[2001:db8::1]` or `[2001:db8::1]:4711`.
fn parse_node(text: &str) -> Option<IpAddr> {
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Some(rest) = text.strip_prefix('[') {
        let (v6, _) = rest.split_once(']')?;
        return v6.parse::<Ipv6Addr>().ok().map(IpAddr::V6);
    }
    let (v4, port) = text.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    v4.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("ip")
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                axum::http::HeaderName::from_bytes(name.as_bytes()).expect("name"),
                HeaderValue::from_str(value).expect("value"),
            );
        }
        map
    }

    fn proxies() -> Vec<IpNet> {
        vec![
            "10.0.0.0/8".parse().expect("net"),
            "2001:db8:1::/48".parse().expect("net"),
        ]
    }

    #[test]
    fn without_trusted_proxies_headers_are_ignored() {
        let h = headers(&[
            ("x-forwarded-for", "203.0.113.7"),
            ("forwarded", "for=203.0.113.7"),
        ]);
        assert_eq!(client_address(ip("10.0.0.5"), &h, &[]), ip("10.0.0.5"));
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_says() {
        let h = headers(&[("x-forwarded-for", "198.51.100.1")]);
        assert_eq!(
            client_address(ip("203.0.113.7"), &h, &proxies()),
            ip("203.0.113.7")
        );
    }

    #[test]
    fn the_first_untrusted_hop_from_the_right_is_the_client() {
        // The client wrote 198.51.100.1 itself; the proxy appended what it saw.
        let h = headers(&[("x-forwarded-for", "198.51.100.1, 203.0.113.7")]);
        assert_eq!(
            client_address(ip("10.0.0.5"), &h, &proxies()),
            ip("203.0.113.7")
        );
        // Two proxies in a row, the second in the list trusted too.
        let h = headers(&[("x-forwarded-for", "203.0.113.7, 10.1.2.3")]);
        assert_eq!(
            client_address(ip("10.0.0.5"), &h, &proxies()),
            ip("203.0.113.7")
        );
        // Split over several header lines.
        let h = headers(&[
            ("x-forwarded-for", "198.51.100.1"),
            ("x-forwarded-for", "203.0.113.7"),
        ]);
        assert_eq!(
            client_address(ip("10.0.0.5"), &h, &proxies()),
            ip("203.0.113.7")
        );
        // Only proxies: the leftmost is as far as we can see.
        let h = headers(&[("x-forwarded-for", "10.9.9.9")]);
        assert_eq!(
            client_address(ip("10.0.0.5"), &h, &proxies()),
            ip("10.9.9.9")
        );
    }

    #[test]
    fn forwarded_is_read_and_preferred() {
        let h = headers(&[
            (
                "forwarded",
                "for=198.51.100.1, for=\"[2001:db8:cafe::17]:4711\";proto=https",
            ),
            ("x-forwarded-for", "192.0.2.99"),
        ]);
        assert_eq!(
            client_address(ip("10.0.0.5"), &h, &proxies()),
            ip("2001:db8:cafe::17")
        );
        let h = headers(&[("forwarded", "For=192.0.2.60:8080;by=10.0.0.5")]);
        assert_eq!(
            client_address(ip("10.0.0.5"), &h, &proxies()),
            ip("192.0.2.60")
        );
    }

    #[test]
    fn unreadable_headers_leave_the_proxy_as_the_client() {
        for h in [
            headers(&[("x-forwarded-for", "not-an-address")]),
            headers(&[("x-forwarded-for", "203.0.113.7, ")]),
            headers(&[("forwarded", "for=unknown")]),
            headers(&[("forwarded", "for=_hidden")]),
            headers(&[("forwarded", "proto=https")]),
        ] {
            assert_eq!(
                client_address(ip("10.0.0.5"), &h, &proxies()),
                ip("10.0.0.5"),
                "{h:?}"
            );
        }
    }

    #[test]
    fn mapped_ipv4_peers_match_ipv4_ranges() {
        let h = headers(&[("x-forwarded-for", "203.0.113.7")]);
        assert_eq!(
            client_address(ip("::ffff:10.0.0.5"), &h, &proxies()),
            ip("203.0.113.7")
        );
    }
}
