//! Bearer-token authentication, compared in constant time.
//!
//! Tokens are compared as SHA-256 digests with `subtle`: equal-length inputs whatever the
//! token lengths, no early exit on the first differing byte, and every configured token is
//! checked (no short-circuit), so response timing says nothing about how close a guess was.

use axum::http::HeaderMap;
use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};

use super::config::AuthConfig;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Agent,
    Admin,
}

pub struct TokenSet {
    agents: Vec<[u8; 32]>,
    admins: Vec<[u8; 32]>,
}

fn digest(token: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(&Sha256::digest(token));
    out
}

fn any_matches(candidates: &[[u8; 32]], presented: &[u8; 32]) -> bool {
    let mut found = Choice::from(0);
    for c in candidates {
        found |= c[..].ct_eq(&presented[..]);
    }
    found.into()
}

impl TokenSet {
    pub fn new(cfg: &AuthConfig) -> Self {
        TokenSet {
            agents: cfg
                .bearer_tokens
                .iter()
                .map(|t| digest(t.as_bytes()))
                .collect(),
            admins: cfg
                .admin_tokens
                .iter()
                .map(|t| digest(t.as_bytes()))
                .collect(),
        }
    }

    /// The role of the request's bearer token, `None` when it is missing or unknown.
    pub fn authenticate(&self, headers: &HeaderMap) -> Option<Role> {
        let value = headers.get(axum::http::header::AUTHORIZATION)?.as_bytes();
        let (scheme, token) = split_scheme(value)?;
        if !scheme.eq_ignore_ascii_case(b"bearer") {
            return None;
        }
        let presented = digest(token);
        // Both lists are always checked, so timing does not reveal the role either.
        let admin = any_matches(&self.admins, &presented);
        let agent = any_matches(&self.agents, &presented);
        if admin {
            Some(Role::Admin)
        } else if agent {
            Some(Role::Agent)
        } else {
            None
        }
    }
}

fn split_scheme(value: &[u8]) -> Option<(&[u8], &[u8])> {
    let space = value.iter().position(|b| *b == b' ')?;
    let token = value[space + 1..].trim_ascii();
    if token.is_empty() {
        return None;
    }
    Some((&value[..space], token))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("authorization", HeaderValue::from_str(v).unwrap());
        h
    }

    fn set() -> TokenSet {
        TokenSet::new(&AuthConfig {
            bearer_tokens: vec!["agent-token-0123456789".into()],
            admin_tokens: vec!["admin-token-0123456789".into()],
        })
    }

    #[test]
    fn roles_follow_the_token_list() {
        let s = set();
        assert_eq!(
            s.authenticate(&headers("Bearer agent-token-0123456789")),
            Some(Role::Agent)
        );
        assert_eq!(
            s.authenticate(&headers("bearer admin-token-0123456789")),
            Some(Role::Admin)
        );
    }

    #[test]
    fn wrong_missing_or_other_scheme_is_refused() {
        let s = set();
        assert_eq!(
            s.authenticate(&headers("Bearer agent-token-012345678")),
            None
        );
        assert_eq!(
            s.authenticate(&headers("Basic agent-token-0123456789")),
            None
        );
        assert_eq!(s.authenticate(&headers("Bearer ")), None);
        assert_eq!(s.authenticate(&HeaderMap::new()), None);
    }
}
