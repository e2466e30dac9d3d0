//! Users and how their passwords are checked: vulcand's one plaintext user, and users with
//! bcrypt or argon2 hashes.

use std::collections::HashMap;
use std::sync::Arc;

use argon2::password_hash::PasswordVerifier;
use siphasher::sip128::SipHasher24;
use subtle::ConstantTimeEq;

/// The highest bcrypt cost accepted: cost 18 already takes several seconds per check, and a
/// higher one would pin a verification thread for minutes.
const MAX_BCRYPT_COST: u32 = 18;

/// The most memory an argon2 hash may ask for, in KiB (1 GiB): each verification
/// allocates it.
const MAX_ARGON2_KIB: u32 = 1024 * 1024;

/// A keyed 128-bit hash (SipHash-2-4 under a random key made when the middleware is built).
/// Used to compare plaintext passwords in constant time and length, and to remember
/// verified credentials without storing them.
#[derive(Clone)]
pub(crate) struct Tagger {
    key: SipHasher24,
}

impl Tagger {
    /// A tagger with a fresh random key.
    pub(crate) fn new() -> Self {
        let mut key = [0u8; 16];
        if getrandom::fill(&mut key).is_err() {
            // No OS randomness (never seen on the platforms we build for): fall back to
            // std's per-process random hash keys, which come from the same source when it
            // works and from the clock and addresses when it does not.
            use std::hash::BuildHasher;
            let state = std::collections::hash_map::RandomState::new();
            key[..8].copy_from_slice(&state.hash_one(1u8).to_le_bytes());
            key[8..].copy_from_slice(&state.hash_one(2u8).to_le_bytes());
        }
        Self {
            key: SipHasher24::new_with_key(&key),
        }
    }

    /// The tag of `bytes`.
    pub(crate) fn tag(&self, bytes: &[u8]) -> u128 {
        self.key.hash(bytes).as_u128()
    }
}

/// Constant-time equality of two tags.
pub(crate) fn same_tag(a: u128, b: u128) -> bool {
    a.to_le_bytes().ct_eq(&b.to_le_bytes()).into()
}

/// A password hash, checked when the config is validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum PasswordHash {
    /// `$2a$`, `$2b$` or `$2y$` (they verify the same way).
    Bcrypt(String),
    /// An argon2 PHC string: `$argon2id$v=19$m=...,t=...,p=...$salt$hash` (or argon2i/d).
    Argon2(String),
}

impl PasswordHash {
    /// Parses and checks a hash.
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        if ["$2a$", "$2b$", "$2y$"].iter().any(|p| text.starts_with(p)) {
            let parts: bcrypt::HashParts = text
                .parse()
                .map_err(|e| format!("not a valid bcrypt hash: {e}"))?;
            let cost = parts.get_cost();
            if !(4..=MAX_BCRYPT_COST).contains(&cost) {
                return Err(format!(
                    "bcrypt cost {cost} is outside 4 to {MAX_BCRYPT_COST}"
                ));
            }
            return Ok(Self::Bcrypt(text.to_owned()));
        }
        if ["$argon2id$", "$argon2i$", "$argon2d$"]
            .iter()
            .any(|p| text.starts_with(p))
        {
            let hash = argon2::PasswordHash::new(text)
                .map_err(|e| format!("not a valid argon2 PHC string: {e}"))?;
            let params = argon2::Params::try_from(&hash)
                .map_err(|e| format!("invalid argon2 parameters: {e}"))?;
            if params.m_cost() > MAX_ARGON2_KIB {
                return Err(format!(
                    "argon2 memory m={} KiB is above 1 GiB",
                    params.m_cost()
                ));
            }
            if hash.salt.is_none() || hash.hash.is_none() {
                return Err("argon2 PHC string without salt or hash".to_owned());
            }
            return Ok(Self::Argon2(text.to_owned()));
        }
        Err(
            "unsupported hash: expected bcrypt (`$2a$`, `$2b$`, `$2y$`) or an argon2 PHC \
             string (`$argon2id$...`)"
                .to_owned(),
        )
    }

    /// Whether `password` matches. Slow on purpose (tens of milliseconds): run it on a
    /// blocking thread.
    pub(crate) fn verify(&self, password: &[u8]) -> bool {
        match self {
            Self::Bcrypt(hash) => bcrypt::verify(password, hash).unwrap_or(false),
            Self::Argon2(hash) => argon2::PasswordHash::new(hash).is_ok_and(|hash| {
                argon2::Argon2::default()
                    .verify_password(password, &hash)
                    .is_ok()
            }),
        }
    }
}

/// The users of one `auth` middleware.
pub(crate) struct Users {
    pub(crate) tagger: Tagger,
    /// vulcand's plaintext user, as the tag of `user:password`: compared in constant time
    /// and length, never kept in clear after the build.
    pub(crate) plain: Option<u128>,
    /// Users with hashes, by name.
    pub(crate) hashed: HashMap<Vec<u8>, Arc<PasswordHash>>,
    /// Verified in place of an unknown user's hash, so that an unknown name takes as long
    /// as a wrong password and names cannot be guessed by timing.
    pub(crate) decoy: Option<Arc<PasswordHash>>,
}

impl Users {
    /// The plaintext user (if any) and the hashed ones, already checked.
    pub(crate) fn new(plain: Option<(&str, &str)>, hashed: Vec<(String, PasswordHash)>) -> Self {
        let tagger = Tagger::new();
        let plain =
            plain.map(|(user, password)| tagger.tag(format!("{user}:{password}").as_bytes()));
        let hashed: HashMap<Vec<u8>, Arc<PasswordHash>> = hashed
            .into_iter()
            .map(|(user, hash)| (user.into_bytes(), Arc::new(hash)))
            .collect();
        let decoy = hashed.values().next().cloned();
        Self {
            tagger,
            plain,
            hashed,
            decoy,
        }
    }

    /// Whether `credentials` (`user:password`, decoded) are the plaintext user's.
    pub(crate) fn is_plain_user(&self, credentials: &[u8]) -> bool {
        self.plain
            .is_some_and(|plain| same_tag(self.tagger.tag(credentials), plain))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use argon2::password_hash::PasswordHasher;

    /// A bcrypt hash of `password` at the lowest cost, with a fixed salt (tests only).
    pub(crate) fn bcrypt_hash(password: &str, version: bcrypt::Version) -> String {
        bcrypt::hash_with_salt(password, 4, [7; 16])
            .unwrap()
            .format_for_version(version)
    }

    /// An argon2id hash of `password` with tiny parameters and a fixed salt (tests only).
    pub(crate) fn argon2_hash(password: &str) -> String {
        let params = argon2::Params::new(64, 1, 1, None).unwrap();
        argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
            .hash_password_with_salt(password.as_bytes(), b"fixed-salt-16byt")
            .unwrap()
            .to_string()
    }

    #[test]
    fn bcrypt_and_argon2_hashes_parse_and_verify() {
        for version in [
            bcrypt::Version::TwoA,
            bcrypt::Version::TwoB,
            bcrypt::Version::TwoY,
        ] {
            let text = bcrypt_hash("s3cret", version);
            let hash = PasswordHash::parse(&text).unwrap();
            assert!(hash.verify(b"s3cret"), "{text}");
            assert!(!hash.verify(b"s3cret!"), "{text}");
        }
        let text = argon2_hash("s3cret");
        assert!(text.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{text}");
        let hash = PasswordHash::parse(&text).unwrap();
        assert!(hash.verify(b"s3cret"));
        assert!(!hash.verify(b"wrong"));
    }

    #[test]
    fn bad_hashes_say_what_is_wrong() {
        let cases = [
            ("s3cret", "unsupported hash"),
            (
                "$2x$04$abcdefghijklmnopqrstuuABCDEFGHIJKLMNOPQRSTUVWXYZ01234",
                "unsupported",
            ),
            ("$2b$04$short", "not a valid bcrypt hash"),
            ("$argon2id$v=19$m=64,t=1,p=1$!!!", "not a valid argon2"),
            (
                "$argon2id$v=19$m=4194304,t=1,p=1$Zml4ZWQtc2FsdC0xNmJ5dA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
                "above 1 GiB",
            ),
        ];
        for (text, want) in cases {
            let error = PasswordHash::parse(text).unwrap_err();
            assert!(error.contains(want), "{text}: {error}");
        }
        let slow = bcrypt_hash("x", bcrypt::Version::TwoB).replacen("$04$", "$31$", 1);
        assert!(PasswordHash::parse(&slow).unwrap_err().contains("cost 31"));
    }

    #[test]
    fn the_plaintext_user_is_compared_by_tag() {
        let users = Users::new(Some(("alice", "pa:ss")), Vec::new());
        assert!(users.is_plain_user(b"alice:pa:ss"));
        assert!(!users.is_plain_user(b"alice:pa:s"));
        assert!(!users.is_plain_user(b"alice:pa:ss "));
        assert!(!users.is_plain_user(b""));
        // Two taggers have different keys.
        assert_ne!(Tagger::new().tag(b"x"), Tagger::new().tag(b"x"));
    }
}
