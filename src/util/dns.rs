//! Resolver settings shared by the parts that query DNS themselves (ACME preflight, DKIM).

use std::net::SocketAddr;

use hickory_resolver::config::{NameServerConfig, ResolverConfig};

/// A resolver configuration that asks exactly `servers` (UDP, then TCP), each on its own port.
pub fn resolver_config(servers: &[SocketAddr]) -> ResolverConfig {
    let servers = servers
        .iter()
        .map(|addr| {
            let mut ns = NameServerConfig::udp_and_tcp(addr.ip());
            for conn in &mut ns.connections {
                conn.port = addr.port();
            }
            ns
        })
        .collect();
    ResolverConfig::from_name_servers(servers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_server_keeps_its_port() {
        let config = resolver_config(&[
            "127.0.0.1:5353".parse().unwrap(),
            "[::1]:53".parse().unwrap(),
        ]);
        let ports: Vec<(std::net::IpAddr, u16)> = config
            .name_servers()
            .iter()
            .flat_map(|ns| ns.connections.iter().map(move |c| (ns.ip, c.port)))
            .collect();
        assert!(!ports.is_empty());
        assert!(
            ports.contains(&("127.0.0.1".parse().unwrap(), 5353)),
            "{ports:?}"
        );
        assert!(ports.contains(&("::1".parse().unwrap(), 53)), "{ports:?}");
        assert!(ports.iter().all(|(_, p)| *p == 5353 || *p == 53));
    }
}
