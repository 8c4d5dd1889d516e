//! `baton auth`: make tokens and their hashes for `[[auth.tokens]]`, so
//! operators never hash by hand.

use std::io::Read;

use clap::Subcommand;

#[derive(Subcommand)]
pub enum AuthCmd {
    /// Read a token from stdin and print its sha256 (hex) for `[[auth.tokens]] sha256`.
    HashToken,
    /// Print a new random token and its sha256: give the token to the
    /// client, put the hash in the config.
    NewToken,
}

/// Longest token read from stdin (the server reads at most this much too).
const MAX_TOKEN_BYTES: u64 = crate::auth::MAX_CREDENTIAL_BYTES as u64;

pub fn run(cmd: AuthCmd, json: bool) -> anyhow::Result<()> {
    let (token, hash) = match cmd {
        AuthCmd::HashToken => {
            let mut s = String::new();
            std::io::stdin().take(MAX_TOKEN_BYTES + 1).read_to_string(&mut s)?;
            anyhow::ensure!(s.len() as u64 <= MAX_TOKEN_BYTES, "the token is longer than {MAX_TOKEN_BYTES} bytes");
            // One trailing newline (from echo or a file) is not part of the token.
            let t = s.strip_suffix('\n').map(|t| t.strip_suffix('\r').unwrap_or(t)).unwrap_or(&s);
            anyhow::ensure!(!t.trim().is_empty(), "no token on stdin");
            // The server trims the header value, so hash what it will see.
            (None, crate::auth::hash_token(t.trim()))
        }
        AuthCmd::NewToken => {
            let t = crate::auth::new_token();
            let h = crate::auth::hash_token(&t);
            (Some(t), h)
        }
    };
    match (json, token) {
        (true, t) => println!("{}", serde_json::json!({ "token": t, "sha256": hash })),
        (false, Some(t)) => println!("token:  {t}\nsha256: {hash}"),
        (false, None) => println!("{hash}"),
    }
    Ok(())
}
