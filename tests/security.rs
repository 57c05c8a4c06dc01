//! TLS, mutual TLS and bearer tokens, with certificates made at test time
//! (rcgen) — no private key is ever committed.

mod common;

use std::time::{Duration, Instant};

use memgate_client::{Client, ServingStatus};
use memgate_server::auth::Tokens;
use memgate_server::config::{Config, TlsFiles};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use tokio::net::TcpListener;

/// A throwaway CA with a server certificate for `localhost` and a client
/// certificate, all as PEM.
struct Pki {
    ca: String,
    server_cert: String,
    server_key: String,
    client_cert: String,
    client_key: String,
}

fn pki() -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let leaf = |names: Vec<String>| {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let (server_cert, server_key) = leaf(vec!["localhost".into()]);
    let (client_cert, client_key) = leaf(vec!["memgate-test-client".into()]);
    Pki {
        ca: ca.pem(),
        server_cert,
        server_key,
        client_cert,
        client_key,
    }
}

/// Serves `config` in-process; returns the port and a shutdown sender.
async fn serve(config: Config) -> (u16, tokio::sync::oneshot::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(memgate_server::run(listener, config, async {
        let _ = rx.await;
    }));
    (port, tx)
}

/// Polls health through `connect` until SERVING (5 s at most).
async fn wait_serving<F, Fut>(mut connect: F) -> Client
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Client, memgate_client::Error>>,
{
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Ok(c) = connect().await
            && c.health("").await.ok() == Some(ServingStatus::Serving)
        {
            return c;
        }
        assert!(Instant::now() < deadline, "never SERVING");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn tls_config(pki: &Pki, mutual: bool) -> Config {
    let mut config = Config::embedded("127.0.0.1:0".parse().unwrap());
    config.server.tls = Some(TlsFiles {
        cert: pki.server_cert.clone().into_bytes(),
        key: pki.server_key.clone().into_bytes(),
        client_ca: mutual.then(|| pki.ca.clone().into_bytes()),
    });
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_tls_to_clients_that_trust_its_ca() {
    let pki = pki();
    let (port, _stop) = serve(tls_config(&pki, false)).await;
    let target = format!("https://localhost:{port}");
    let c = wait_serving(|| {
        Client::builder(target.clone())
            .tls_ca_pem(pki.ca.clone())
            .connect()
    })
    .await;
    c.set("tls-key", "over tls", None).await.unwrap();
    assert_eq!(
        c.get("tls-key").await.unwrap().as_deref(),
        Some(&b"over tls"[..])
    );

    // A plaintext client gets nowhere.
    let plain = Client::builder(format!("http://localhost:{port}"))
        .retry(memgate_client::RetryPolicy::none())
        .timeout(Duration::from_secs(2))
        .connect_lazy()
        .unwrap();
    assert!(plain.get("tls-key").await.is_err());
    // A client that does not trust the CA refuses the server.
    let other = pki_other_ca();
    let err = Client::builder(target)
        .tls_ca_pem(other)
        .connect()
        .await
        .err();
    assert!(err.is_some(), "a client trusting another CA connected");
}

fn pki_other_ca() -> String {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .self_signed(&KeyPair::generate().unwrap())
        .unwrap()
        .pem()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_requires_a_client_certificate() {
    let pki = pki();
    let (port, _stop) = serve(tls_config(&pki, true)).await;
    let target = format!("https://localhost:{port}");
    let c = wait_serving(|| {
        Client::builder(target.clone())
            .tls_ca_pem(pki.ca.clone())
            .tls_identity_pem(pki.client_cert.clone(), pki.client_key.clone())
            .connect()
    })
    .await;
    c.set("mtls", "ok", None).await.unwrap();

    let anonymous = Client::builder(target)
        .tls_ca_pem(pki.ca.clone())
        .retry(memgate_client::RetryPolicy::none())
        .connect()
        .await;
    let refused = match anonymous {
        Err(_) => true,
        Ok(c) => c.get("mtls").await.is_err(),
    };
    assert!(refused, "a client without a certificate was served");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_tokens_guard_the_cache_but_not_the_probes() {
    const TOKEN_A: &str = "first-token-0123456789";
    const TOKEN_B: &str = "second-token-0123456789";
    let mut config = Config::embedded("127.0.0.1:0".parse().unwrap());
    config.server.tokens = Some(Tokens::parse(&format!("{TOKEN_A}\n{TOKEN_B}\n")).unwrap());
    let (port, _stop) = serve(config).await;
    let target = format!("http://127.0.0.1:{port}");

    // Health answers without a token.
    let anonymous = wait_serving(|| Client::builder(target.clone()).connect()).await;
    let err = anonymous.get("k").await.unwrap_err();
    assert!(err.is_unauthenticated(), "{err}");
    assert!(err.to_string().contains("authorization: Bearer"), "{err}");
    assert_eq!(err.reason().as_deref(), Some("CREDENTIALS_MISSING"));

    let wrong = Client::builder(target.clone())
        .bearer_token("not-the-token-at-all")
        .connect()
        .await
        .unwrap();
    let err = wrong.set("k", "v", None).await.unwrap_err();
    assert!(err.is_unauthenticated(), "{err}");
    assert_eq!(err.reason().as_deref(), Some("CREDENTIALS_REJECTED"));

    for token in [TOKEN_A, TOKEN_B] {
        let c = Client::builder(target.clone())
            .bearer_token(token)
            .connect()
            .await
            .unwrap();
        c.set("k", token, None).await.unwrap();
        assert_eq!(c.get("k").await.unwrap().as_deref(), Some(token.as_bytes()));
    }
}
