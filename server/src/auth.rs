//! Bearer-token authentication for the Cache service.
//!
//! Tokens come from `--auth-token-file` (one per line). Every presented
//! token is compared with every configured one in constant time, so timing
//! reveals nothing about how much of a token matched. The health and
//! reflection services are not wrapped: probes must work without secrets.

use std::sync::Arc;

use subtle::ConstantTimeEq;
use tonic::service::Interceptor;
use tonic::{Request, Status};

use crate::error::{AuthError, Error};

/// The accepted tokens. `Debug` never prints them.
#[derive(Clone, Default)]
pub struct Tokens(Arc<Vec<Vec<u8>>>);

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tokens({} redacted)", self.0.len())
    }
}

impl Tokens {
    /// Parses a token file: one token per line; blank lines and lines
    /// starting with `#` are skipped.
    pub fn parse(text: &str) -> Result<Tokens, String> {
        let tokens: Vec<Vec<u8>> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| l.as_bytes().to_vec())
            .collect();
        if tokens.is_empty() {
            return Err("the token file holds no token".to_owned());
        }
        if let Some(short) = tokens.iter().find(|t| t.len() < 16) {
            return Err(format!(
                "a token is {} characters long; use at least 16 random characters",
                short.len()
            ));
        }
        Ok(Tokens(Arc::new(tokens)))
    }

    /// How many tokens are accepted.
    pub fn count(&self) -> usize {
        self.0.len()
    }

    /// True if `presented` equals one of the tokens.
    pub fn accepts(&self, presented: &[u8]) -> bool {
        // Check every token, without stopping at a match.
        self.0.iter().fold(0u8, |acc, t| {
            acc | t.as_slice().ct_eq(presented).unwrap_u8()
        }) == 1
    }
}

/// Checks `authorization: Bearer <token>` when tokens are configured.
#[derive(Clone, Debug, Default)]
pub struct Auth {
    tokens: Option<Tokens>,
}

impl Auth {
    /// Requires one of `tokens`, or nothing when `None`.
    pub fn new(tokens: Option<Tokens>) -> Auth {
        Auth { tokens }
    }
}

impl Interceptor for Auth {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
        let Some(tokens) = &self.tokens else {
            return Ok(req);
        };
        let Some(header) = req.metadata().get("authorization").map(|v| v.as_bytes()) else {
            return Err(Error::Unauthenticated(AuthError::Missing).into());
        };
        // The scheme is case-insensitive (RFC 6750).
        let token = match header.split_at_checked(7) {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case(b"bearer ") => token,
            _ => {
                return Err(Error::Unauthenticated(AuthError::Unsupported).into());
            }
        };
        if tokens.accepts(token) {
            Ok(req)
        } else {
            Err(Error::Unauthenticated(AuthError::Rejected).into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "token-aaaaaaaaaaaaaaaa";
    const B: &str = "token-bbbbbbbbbbbbbbbb";

    fn request(auth: Option<&str>) -> Request<()> {
        let mut req = Request::new(());
        if let Some(a) = auth {
            req.metadata_mut()
                .insert("authorization", a.parse().unwrap());
        }
        req
    }

    #[test]
    fn parses_token_files() {
        let t = Tokens::parse(&format!("# comment\n\n{A}\n  {B}  \n")).unwrap();
        assert!(t.accepts(A.as_bytes()) && t.accepts(B.as_bytes()));
        assert!(!t.accepts(b"token-aaaaaaaaaaaaaaa"));
        assert!(!t.accepts(b""));
        assert!(Tokens::parse("# nothing\n").is_err());
        assert!(
            Tokens::parse("short\n")
                .unwrap_err()
                .contains("at least 16")
        );
        assert!(!format!("{t:?}").contains("token-"));
    }

    #[test]
    fn checks_the_bearer_header() {
        let mut auth = Auth::new(Some(Tokens::parse(&format!("{A}\n{B}")).unwrap()));
        assert!(auth.call(request(Some(&format!("Bearer {B}")))).is_ok());
        assert!(auth.call(request(Some(&format!("bearer {A}")))).is_ok());
        let err = auth.call(request(Some("Basic abc"))).unwrap_err();
        assert!(err.message().contains("unsupported"), "{}", err.message());
        for bad in [
            None,
            Some("Bearer nope-nope-nope-nope"),
            Some(A),
            Some("Basic abc"),
        ] {
            let err = auth.call(request(bad)).unwrap_err();
            assert_eq!(err.code(), tonic::Code::Unauthenticated, "{bad:?}");
        }
        let mut open = Auth::new(None);
        assert!(open.call(request(None)).is_ok());
    }
}
