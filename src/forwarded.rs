//! Who the client is when gatehouse sits behind load balancers: the direct peer, or, when
//! that peer is a trusted proxy, the address it says it forwarded for.
//!
//! Rules:
//! 1. Only a direct peer inside `server.trusted_proxies` is believed. From anyone else every
//!    `X-Forwarded-*` and `Forwarded` header is ignored (and later stripped): the client is
//!    the peer.
//! 2. From a trusted peer, the client is the right-most address of `X-Forwarded-For` that is
//!    not itself a trusted proxy (entries to its left are whatever the client wrote). Without
//!    `X-Forwarded-For`, `Forwarded: for=` is read the same way. An entry that is not an IP
//!    address ends the walk: the client is the hop right of it (or the peer).
//! 3. The chain sent upstream starts at that client and ends with the peer, so upstreams never
//!    see the client-written part. `X-Forwarded-Proto`/`-Host` of a trusted peer are passed on;
//!    otherwise gatehouse writes its own from `public_origin`.

use std::net::{IpAddr, SocketAddr};

use http::{HeaderMap, HeaderValue};
use ipnet::IpNet;

/// What a request says about its client, after the trust rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientInfo {
    pub ip: IpAddr,
    /// `X-Forwarded-For` to send upstream: the client, the trusted hops, the peer.
    pub chain: HeaderValue,
    /// The trusted peer's `X-Forwarded-Proto` / `-Host`, when it sent one.
    pub proto: Option<String>,
    pub host: Option<String>,
}

/// An IP address as text, as `Display` writes it; IPv4 (nearly every client) without `fmt`,
/// since every request forwards one and logs one.
#[derive(Clone, Copy)]
pub struct IpText {
    buf: [u8; IPV6_TEXT_MAX],
    len: usize,
}

/// The longest IPv6 text: `ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255`.
const IPV6_TEXT_MAX: usize = 45;

impl AsRef<[u8]> for IpText {
    fn as_ref(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl IpText {
    pub fn new(ip: IpAddr) -> IpText {
        let mut text = IpText {
            buf: [0; IPV6_TEXT_MAX],
            len: 0,
        };
        match ip {
            IpAddr::V4(v4) => {
                for (i, octet) in v4.octets().into_iter().enumerate() {
                    if i > 0 {
                        text.push(b'.');
                    }
                    if octet >= 100 {
                        text.push(b'0' + octet / 100);
                    }
                    if octet >= 10 {
                        text.push(b'0' + octet / 10 % 10);
                    }
                    text.push(b'0' + octet % 10);
                }
            }
            IpAddr::V6(v6) => {
                use std::io::Write as _;
                let mut rest = &mut text.buf[..];
                // Never fails: the buffer holds the longest IPv6 text.
                let _ = write!(rest, "{v6}");
                text.len = IPV6_TEXT_MAX - rest.len();
            }
        }
        text
    }

    fn push(&mut self, b: u8) {
        self.buf[self.len] = b;
        self.len += 1;
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII is ever written.
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or_default()
    }
}

impl std::fmt::Display for IpText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether `ip` is one of the trusted proxies.
pub fn is_trusted(ip: IpAddr, trusted: &[IpNet]) -> bool {
    let ip = canonical(ip);
    trusted.iter().any(|net| net.contains(&ip))
}

/// An IPv4-mapped IPv6 address (`::ffff:10.0.0.1`) is that IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The direct peer of a connection, as every request on it names it: made once per
/// connection, so that a request copies its address text (a reference count) instead of
/// writing it again.
#[derive(Debug, Clone)]
pub struct Peer {
    pub addr: SocketAddr,
    /// The address, IPv4-mapped IPv6 taken as IPv4.
    pub ip: IpAddr,
    /// `ip` as text, the `X-Forwarded-For` of a request from an untrusted peer.
    text: HeaderValue,
}

impl Peer {
    pub fn new(addr: SocketAddr) -> Peer {
        let ip = canonical(addr.ip());
        Peer {
            addr,
            ip,
            // One allocation, shared by every copy. Addresses are always valid header text.
            text: HeaderValue::from_maybe_shared(bytes::Bytes::from_owner(IpText::new(ip)))
                .unwrap_or(HeaderValue::from_static("")),
        }
    }
}

/// Rules 1 to 3 for a request from `peer` with `headers`.
pub fn client(peer: &Peer, headers: &HeaderMap, trusted: &[IpNet]) -> ClientInfo {
    let peer_ip = peer.ip;
    let untrusted = || ClientInfo {
        ip: peer_ip,
        chain: peer.text.clone(),
        proto: None,
        host: None,
    };
    if trusted.is_empty() || !is_trusted(peer_ip, trusted) {
        return untrusted();
    }
    let mut hops = forwarded_for(headers);
    // Walk from the right: trusted proxies are skipped, the first other address is the client.
    let mut start = hops.len();
    let mut client = peer_ip;
    while start > 0 {
        let Some(ip) = hops[start - 1] else { break };
        start -= 1;
        client = ip;
        if !is_trusted(ip, trusted) {
            break;
        }
    }
    let kept: Vec<String> = hops
        .drain(start..)
        .flatten()
        .map(|ip| IpText::new(ip).as_str().to_owned())
        .chain(std::iter::once(IpText::new(peer_ip).as_str().to_owned()))
        .collect();
    let single = |name: &str| {
        let mut values = headers.get_all(name).iter();
        match (values.next(), values.next()) {
            (Some(v), None) => v
                .to_str()
                .ok()
                .map(str::trim)
                .filter(|v| !v.is_empty() && !v.contains(','))
                .map(str::to_owned),
            _ => None,
        }
    };
    ClientInfo {
        ip: client,
        chain: HeaderValue::try_from(kept.join(", ")).unwrap_or(HeaderValue::from_static("")),
        proto: single("x-forwarded-proto").filter(|p| p == "http" || p == "https"),
        host: single("x-forwarded-host"),
    }
}

/// The hops of `X-Forwarded-For` (all headers, in order), or else of `Forwarded: for=`;
/// `None` for an entry that is not an IP address.
fn forwarded_for(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    let xff: Vec<Option<IpAddr>> = headers
        .get_all("x-forwarded-for")
        .iter()
        .flat_map(|v| v.to_str().unwrap_or("!").split(','))
        .map(|entry| parse_hop(entry.trim()))
        .collect();
    if !xff.is_empty() {
        return xff;
    }
    headers
        .get_all("forwarded")
        .iter()
        .flat_map(|v| v.to_str().unwrap_or("for=!").split(','))
        .filter_map(|element| {
            element.split(';').find_map(|pair| {
                let (k, v) = pair.split_once('=')?;
                k.trim()
                    .eq_ignore_ascii_case("for")
                    .then(|| parse_hop(v.trim().trim_matches('"')))
            })
        })
        .collect()
}

/// `1.2.3.4`, `1.2.3.4:5678`, `[::1]`, `[::1]:5678`, `::1`.
fn parse_hop(entry: &str) -> Option<IpAddr> {
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    if let Ok(sock) = entry.parse::<SocketAddr>() {
        return Some(canonical(sock.ip()));
    }
    entry
        .strip_prefix('[')
        .and_then(|rest| rest.split_once(']'))
        .and_then(|(ip, _)| ip.parse::<IpAddr>().ok())
        .map(canonical)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn ip_text_reads_exactly_as_display_writes_for_every_ipv4_octet_and_ipv6_form() {
        let mut ips: Vec<IpAddr> = (0..=255u8)
            .map(|o| IpAddr::from([o, 255 - o, o / 7, 9]))
            .collect();
        for v6 in [
            "::",
            "::1",
            "2001:db8::1",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            "::ffff:255.255.255.255",
            "fe80::1:2:3:4",
        ] {
            ips.push(v6.parse().unwrap());
        }
        for ip in ips {
            assert_eq!(IpText::new(ip).as_str(), ip.to_string());
        }
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|n| n.parse().unwrap()).collect()
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn peer(ip: &str) -> Peer {
        Peer::new(SocketAddr::new(ip.parse().unwrap(), 40000))
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_claims() {
        let h = headers(&[
            ("x-forwarded-for", "1.1.1.1"),
            ("x-forwarded-proto", "https"),
            ("forwarded", "for=2.2.2.2"),
        ]);
        let c = client(&peer("203.0.113.9"), &h, &nets(&["10.0.0.0/8"]));
        assert_eq!(c.ip, "203.0.113.9".parse::<IpAddr>().unwrap());
        assert_eq!(c.chain, "203.0.113.9");
        assert_eq!((c.proto, c.host), (None, None));
        let none = client(&peer("10.0.0.1"), &h, &[]);
        assert_eq!(
            none.chain, "10.0.0.1",
            "no trusted proxies: nobody is believed"
        );
    }

    #[test]
    fn behind_trusted_proxies_the_right_most_untrusted_hop_is_the_client() {
        let trusted = nets(&["10.0.0.0/8", "127.0.0.1/32"]);
        // The client wrote 6.6.6.6 itself; 198.51.100.7 is who reached the first proxy.
        let h = headers(&[
            ("x-forwarded-for", "6.6.6.6, 198.51.100.7"),
            ("x-forwarded-for", "10.1.1.1"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "app.example.com"),
        ]);
        let c = client(&peer("127.0.0.1"), &h, &trusted);
        assert_eq!(c.ip, "198.51.100.7".parse::<IpAddr>().unwrap());
        assert_eq!(c.chain, "198.51.100.7, 10.1.1.1, 127.0.0.1");
        assert_eq!(c.proto.as_deref(), Some("https"));
        assert_eq!(c.host.as_deref(), Some("app.example.com"));
    }

    #[test]
    fn forwarded_for_is_read_when_there_is_no_x_forwarded_for() {
        let trusted = nets(&["10.0.0.0/8"]);
        let h = headers(&[(
            "forwarded",
            r#"for="[2001:db8::1]:4711";proto=https, for=10.0.0.2"#,
        )]);
        let c = client(&peer("10.0.0.3"), &h, &trusted);
        assert_eq!(c.ip, "2001:db8::1".parse::<IpAddr>().unwrap());
        assert_eq!(c.chain, "2001:db8::1, 10.0.0.2, 10.0.0.3");
    }

    #[test]
    fn garbage_ends_the_walk_and_an_all_trusted_chain_yields_its_first_hop() {
        let trusted = nets(&["10.0.0.0/8"]);
        let h = headers(&[("x-forwarded-for", "198.51.100.1, unknown, 10.0.0.9")]);
        let c = client(&peer("10.0.0.1"), &h, &trusted);
        assert_eq!(
            c.ip,
            "10.0.0.9".parse::<IpAddr>().unwrap(),
            "the hop right of the garbage"
        );
        assert_eq!(c.chain, "10.0.0.9, 10.0.0.1");
        let h = headers(&[("x-forwarded-for", "10.0.0.5, 10.0.0.6")]);
        let c = client(&peer("10.0.0.1"), &h, &trusted);
        assert_eq!(c.ip, "10.0.0.5".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn a_mapped_ipv6_peer_matches_an_ipv4_range_and_a_bad_proto_is_ignored() {
        let trusted = nets(&["10.0.0.0/8"]);
        let h = headers(&[
            ("x-forwarded-for", "192.0.2.1"),
            ("x-forwarded-proto", "gopher"),
        ]);
        let c = client(&peer("::ffff:10.0.0.1"), &h, &trusted);
        assert_eq!(c.ip, "192.0.2.1".parse::<IpAddr>().unwrap());
        assert_eq!(c.proto, None);
    }
}
