//! `--check-config`: everything [`Config`] validation checks, and what only
//! serving would find out, without binding or connecting: the TLS material
//! loads the way tonic will load it (a certificate chain, a private key that
//! matches it, a client CA), and every memcached address resolves (those
//! of `--memcached` and of the `--memcached-file` list; SRV names are
//! resolved while serving).

use std::net::ToSocketAddrs;
use std::path::Path;
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;

use crate::config::{Backend, Config, Settings};
use crate::membership::{self, Source};
use crate::store::memcached::ring::ShardSpec;

/// A configuration that passed every check.
#[derive(Debug)]
pub struct Checked {
    /// The validated configuration.
    pub config: Config,
    /// One line per thing checked beyond the settings themselves (e.g.
    /// "tls: 2 certificates; the key matches"). Never a secret.
    pub notes: Vec<String>,
}

/// Validates `settings` into a [`Config`] and checks the TLS material and
/// the memcached addresses. The error is one line naming the setting and
/// file at fault.
pub fn check(settings: &Settings) -> Result<Checked, String> {
    let config = Config::try_from(settings.clone())?;
    let mut notes = Vec::new();

    if let Some(tls) = &config.server.tls {
        // try_from read these files, so the paths are set.
        let cert_path = settings.tls_cert.as_deref().unwrap_or(Path::new("?"));
        let key_path = settings.tls_key.as_deref().unwrap_or(Path::new("?"));
        let certs = certificates("--tls-cert", cert_path, &tls.cert)?;
        let key = PrivateKeyDer::from_pem_slice(&tls.key)
            .map_err(|e| format!("--tls-key {}: no PEM private key: {e}", key_path.display()))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let n = certs.len();
        rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| {
                format!(
                    "--tls-key {} does not serve --tls-cert {}: {e}",
                    key_path.display(),
                    cert_path.display()
                )
            })?;
        notes.push(format!(
            "tls: {n} certificate{} in the chain; the key matches",
            if n == 1 { "" } else { "s" }
        ));
        if let Some(ca) = &tls.client_ca {
            let ca_path = settings.tls_client_ca.as_deref().unwrap_or(Path::new("?"));
            let mut roots = RootCertStore::empty();
            let cas = certificates("--tls-client-ca", ca_path, ca)?;
            let n = cas.len();
            for cert in cas {
                roots
                    .add(cert)
                    .map_err(|e| format!("--tls-client-ca {}: {e}", ca_path.display()))?;
            }
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| format!("--tls-client-ca {}: {e}", ca_path.display()))?;
            notes.push(format!("tls: clients need a certificate from {n} CA(s)"));
        }
    }

    if let Some(tokens) = &config.server.tokens {
        notes.push(format!("auth: {} token(s), not shown", tokens.count()));
    }

    if let Backend::Memcached { members, .. } = &config.backend {
        match members {
            Source::Static(shards) => resolve(shards, &mut notes)?,
            Source::File { path, .. } => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("--memcached-file {}: {e}", path.display()))?;
                let origin = format!("--memcached-file {}", path.display());
                let shards = membership::parse_list(&origin, &text)?;
                notes.push(format!("{origin}: {} server(s)", shards.len()));
                resolve(&shards, &mut notes)?;
            }
            // Asked while serving (an unresolvable name is retried then, not
            // fatal), so not here.
            Source::Srv { name, .. } => notes.push(format!(
                "memcached servers from the SRV records of {name}, resolved while serving"
            )),
        }
    }

    Ok(Checked { config, notes })
}

/// Resolves every server's address (without connecting).
fn resolve(shards: &[ShardSpec], notes: &mut Vec<String>) -> Result<(), String> {
    for shard in shards {
        let addrs: Vec<_> = shard
            .addr
            .to_socket_addrs()
            .map_err(|e| format!("--memcached {}: does not resolve: {e}", shard.addr))?
            .collect();
        if addrs.is_empty() {
            return Err(format!(
                "--memcached {}: resolves to no address",
                shard.addr
            ));
        }
        let addrs: Vec<String> = addrs.iter().map(ToString::to_string).collect();
        notes.push(format!(
            "memcached {} resolves to {}",
            shard.addr,
            addrs.join(", ")
        ));
    }
    Ok(())
}

/// Every certificate in a PEM file; at least one.
fn certificates(
    flag: &str,
    path: &Path,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{flag} {}: bad PEM: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{flag} {}: no PEM certificate (-----BEGIN CERTIFICATE-----) in it",
            path.display()
        ));
    }
    Ok(certs)
}

/// The report `--check-config` prints: the notes as comments, then the
/// effective settings as a configuration file that would reproduce them.
pub fn report(settings: &Settings, config_file: Option<&Path>, checked: &Checked) -> String {
    let mut out = String::from("# memgate: the configuration is valid.\n");
    match config_file {
        Some(path) => out.push_str(&format!(
            "# Effective settings: defaults < {} < MEMGATE_* variables < flags.\n",
            path.display()
        )),
        None => out.push_str("# Effective settings: defaults < MEMGATE_* variables < flags.\n"),
    }
    for note in &checked.notes {
        out.push_str(&format!("# {note}\n"));
    }
    out.push('\n');
    out.push_str(&settings.to_toml());
    out
}
