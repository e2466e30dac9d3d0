//! Parsing `etcd://H:P[,H:P]/PREFIX[?flat=SPEC...][&prefix=KEY]`.

use crate::error::RegistryError;
use crate::flat::FlatPrefix;

/// etcd's client port, used when an endpoint has none.
pub(super) const DEFAULT_PORT: u16 = 2379;

/// What an `etcd://` URL says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Options {
    /// `http://H:P`, one per endpoint.
    pub(super) endpoints: Vec<String>,
    /// The main prefix without a trailing slash: `/vulcand`, or `vulcand` from `?prefix=`.
    pub(super) prefix: String,
    /// The `flat=` prefixes, in URL order.
    pub(super) flats: Vec<FlatPrefix>,
}

impl Options {
    pub(super) fn parse(url: &str) -> Result<Options, RegistryError> {
        let invalid = |reason: String| RegistryError::InvalidUrl {
            url: url.to_owned(),
            reason,
        };
        let rest = url
            .split_once("://")
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("etcd"))
            .map(|(_, rest)| rest)
            .ok_or_else(|| invalid("expected etcd://HOST:PORT/PREFIX".to_owned()))?;
        let (location, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (authority, path) = match location.find('/') {
            Some(slash) => location.split_at(slash),
            None => (location, ""),
        };

        let endpoints = authority
            .split(',')
            .map(|endpoint| endpoint_url(endpoint.trim()).map_err(&invalid))
            .collect::<Result<Vec<_>, _>>()?;

        let mut prefix_param = None;
        let mut flats = Vec::new();
        for pair in query.split('&').filter(|pair| !pair.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = percent_decode(value).map_err(&invalid)?;
            match name {
                "flat" => flats.push(
                    value
                        .parse::<FlatPrefix>()
                        .map_err(|e| invalid(e.to_string()))?,
                ),
                "prefix" if prefix_param.is_none() => prefix_param = Some(value),
                "prefix" => return Err(invalid("prefix= is given twice".to_owned())),
                _ => {
                    return Err(invalid(format!(
                        "unknown parameter {name:?}; expected flat=SPEC or prefix=KEY"
                    )));
                }
            }
        }

        let path = percent_decode(path).map_err(&invalid)?;
        let path = path.strip_suffix('/').unwrap_or(&path);
        let prefix = match (path.is_empty(), prefix_param) {
            (false, None) => path.to_owned(),
            (true, Some(prefix)) => prefix.strip_suffix('/').unwrap_or(&prefix).to_owned(),
            (false, Some(_)) => {
                return Err(invalid(
                    "give the prefix either as the path or as prefix=, not both".to_owned(),
                ));
            }
            (true, None) => {
                return Err(invalid(
                    "no prefix: etcd://HOST:PORT/vulcand watches the keys under /vulcand/, \
                     etcd://HOST:PORT/?prefix=vulcand those under vulcand/"
                        .to_owned(),
                ));
            }
        };
        if prefix.is_empty() || prefix.contains("//") {
            return Err(invalid(format!(
                "the prefix {prefix:?} is empty or has an empty segment ('//')"
            )));
        }
        if let Some((a, b)) = super::layout::Layout::overlap(&prefix, &flats) {
            return Err(invalid(format!(
                "the prefixes {a:?} and {b:?} overlap: a key under both could not be told apart"
            )));
        }
        Ok(Options {
            endpoints,
            prefix,
            flats,
        })
    }
}

/// `http://HOST:PORT` for `HOST[:PORT]` (`[v6]:PORT` for IPv6), with etcd's port by default.
fn endpoint_url(endpoint: &str) -> Result<String, String> {
    if endpoint.is_empty() {
        return Err("expected HOST:PORT[,HOST:PORT...] after etcd://".to_owned());
    }
    if endpoint.contains(['@', '/', ' ']) {
        return Err(format!(
            "the endpoint {endpoint:?} is not HOST:PORT (credentials and TLS are not supported)"
        ));
    }
    let has_port = match endpoint.strip_prefix('[') {
        Some(v6) => v6.contains("]:"),
        None => endpoint.contains(':'),
    };
    if !has_port {
        return Ok(format!("http://{endpoint}:{DEFAULT_PORT}"));
    }
    let (host, port) = endpoint.rsplit_once(':').unwrap_or((endpoint, ""));
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(format!("the endpoint {endpoint:?} is not HOST:PORT"));
    }
    Ok(format!("http://{endpoint}"))
}

/// Decodes `%XX` escapes (so a flat spec or a prefix may hold `?`, `&`, `#` or `%`); leaves
/// `+` alone.
fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                .ok_or_else(|| format!("bad percent escape at byte {i} of {s:?}"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("{s:?} does not decode to UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(url: &str) -> Options {
        Options::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"))
    }

    fn reason(url: &str) -> String {
        match Options::parse(url) {
            Err(RegistryError::InvalidUrl { reason, .. }) => reason,
            other => panic!("{url}: expected InvalidUrl, got {other:?}"),
        }
    }

    #[test]
    fn path_is_the_prefix_with_its_leading_slash() {
        let options = parse("etcd://10.0.0.1:2379,10.0.0.2:2380/vulcand");
        assert_eq!(
            options.endpoints,
            ["http://10.0.0.1:2379", "http://10.0.0.2:2380"]
        );
        assert_eq!(options.prefix, "/vulcand");
        assert!(options.flats.is_empty());
        assert_eq!(parse("ETCD://h/vulcand/").prefix, "/vulcand");
        assert_eq!(parse("etcd://h:1/a/b").prefix, "/a/b");
    }

    #[test]
    fn prefix_parameter_addresses_keys_without_a_leading_slash() {
        assert_eq!(parse("etcd://h:1/?prefix=vulcand").prefix, "vulcand");
        assert_eq!(parse("etcd://h:1?prefix=vulcand/").prefix, "vulcand");
        assert_eq!(parse("etcd://h:1?prefix=%2Fvulcand").prefix, "/vulcand");
        assert!(reason("etcd://h:1/vulcand?prefix=vulcand").contains("not both"));
        assert!(reason("etcd://h:1/").contains("no prefix"));
        assert!(reason("etcd://h:1").contains("no prefix"));
        assert!(reason("etcd://h:1?prefix=").contains("empty"));
        assert!(reason("etcd://h:1//vulcand").contains("empty segment"));
    }

    #[test]
    fn endpoints_default_to_etcds_port_and_must_be_host_port() {
        assert_eq!(
            parse("etcd://localhost/v").endpoints,
            ["http://localhost:2379"]
        );
        assert_eq!(parse("etcd://[::1]/v").endpoints, ["http://[::1]:2379"]);
        assert_eq!(parse("etcd://[::1]:23/v").endpoints, ["http://[::1]:23"]);
        assert!(reason("etcd:///vulcand").contains("HOST:PORT"));
        assert!(reason("etcd://h:1,/vulcand").contains("HOST:PORT"));
        assert!(reason("etcd://h:x/vulcand").contains("not HOST:PORT"));
        assert!(reason("etcd://u:p@h:1/vulcand").contains("credentials"));
    }

    #[test]
    fn flat_parameters_are_flat_prefix_specs() {
        let options = parse("etcd://h:1/vulcand?flat=/test=apache&flat=%2Fvarnish%2Fbackends%2F*");
        let specs: Vec<String> = options.flats.iter().map(ToString::to_string).collect();
        assert_eq!(specs, ["/test=apache", "/varnish/backends/*"]);
        assert!(reason("etcd://h:1/vulcand?flat=/test").contains("/test"));
        assert!(reason("etcd://h:1/vulcand?flat=/vulcand/x=a").contains("overlap"));
        assert!(reason("etcd://h:1/vulcand?flat=/t=a&flat=/t=b").contains("overlap"));
        assert!(reason("etcd://h:1/vulcand?watch=1").contains("unknown parameter"));
        assert!(reason("etcd://h:1/vulcand?flat=%zz").contains("percent"));
    }
}
