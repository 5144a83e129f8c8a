//! `hookmesh sig`: sign and verify webhooks exactly as the Envoy filter does, to answer
//! "why does my signature fail?" with the failing part named.

use anyhow::{anyhow, Context, Result};
use clap::{Args, Subcommand};
use hookmesh_filter::config::{GenericHmacConfig, Secret, VerifyConfig};
use hookmesh_filter::{sign, Headers, SchemeName, SignInput, SignedRequest, Verifier};
use std::io::{Read, Write};
use std::path::PathBuf;

/// `hookmesh sig` subcommands.
#[derive(Debug, Subcommand)]
pub enum SigCommand {
    /// Verify a request; prints `valid` (exit 0) or `invalid: <reason>` (exit 1).
    Verify(VerifyArgs),
    /// Sign a body; prints the headers to send, one `Name: value` per line.
    Sign(SignArgs),
    /// List the supported schemes.
    Schemes,
}

/// Arguments shared by sign and verify.
#[derive(Debug, Args)]
pub struct SchemeArgs {
    /// Signature scheme (see `hookmesh sig schemes`).
    #[arg(long, value_parser = parse_scheme)]
    pub scheme: SchemeName,
    /// File with the exact body bytes; `-` reads standard input.
    #[arg(long)]
    pub body_file: PathBuf,
    /// Full URL the provider called (Twilio, Square, `{url}` templates).
    #[arg(long)]
    pub url: Option<String>,
    /// HTTP method.
    #[arg(long, default_value = "POST")]
    pub method: String,
    /// Settings of the generic_hmac scheme, as JSON (see docs/filter-config.md).
    #[arg(long)]
    pub generic: Option<String>,
}

/// `hookmesh sig verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    scheme: SchemeArgs,
    /// Secret or public key; repeat for several (rotation).
    #[arg(long = "secret", required = true)]
    secrets: Vec<String>,
    /// A request header, `Name: value`; repeat for each.
    #[arg(short = 'H', long = "header")]
    headers: Vec<String>,
    /// Unix time to verify at (default: now).
    #[arg(long)]
    now: Option<i64>,
    /// Timestamp tolerance in seconds (default: the vendor's).
    #[arg(long)]
    tolerance: Option<u64>,
}

/// `hookmesh sig sign`.
#[derive(Debug, Args)]
pub struct SignArgs {
    #[command(flatten)]
    scheme: SchemeArgs,
    /// Signing secret or private key.
    #[arg(long)]
    secret: String,
    /// Message id (Standard Webhooks, Svix, `{id}`).
    #[arg(long, default_value = "msg_hookmesh_cli")]
    id: String,
    /// Unix timestamp to sign (default: now).
    #[arg(long)]
    timestamp: Option<i64>,
}

fn parse_scheme(s: &str) -> Result<SchemeName, String> {
    SchemeName::parse(s).ok_or_else(|| {
        let all: Vec<&str> = SchemeName::ALL.iter().map(|s| s.as_str()).collect();
        format!("unknown scheme `{s}`; one of: {}", all.join(", "))
    })
}

/// Outcome of a `sig` command, for the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigOutcome {
    /// Signed, listed, or verified valid.
    Ok,
    /// Verified invalid.
    Invalid,
}

/// Runs a `sig` subcommand, writing its result to `out`.
///
/// # Errors
/// Unreadable body files, malformed headers, URLs or generic settings, and secrets the
/// scheme cannot use; each message names the offending argument.
pub fn run(cmd: &SigCommand, now: i64, out: &mut dyn Write) -> Result<SigOutcome> {
    match cmd {
        SigCommand::Schemes => {
            for s in SchemeName::ALL {
                writeln!(out, "{s}")?;
            }
            Ok(SigOutcome::Ok)
        }
        SigCommand::Sign(a) => {
            let body = read_body(&a.scheme.body_file)?;
            let generic = generic(&a.scheme)?;
            let input = SignInput {
                body: &body,
                id: &a.id,
                timestamp: a.timestamp.unwrap_or(now),
                url: a.scheme.url.as_deref(),
                method: &a.scheme.method,
            };
            let headers = sign(a.scheme.scheme, &a.secret, generic.as_ref(), &input)
                .map_err(|e| anyhow!("--secret/--url: {e}"))?;
            for (n, v) in headers {
                writeln!(out, "{n}: {v}")?;
            }
            Ok(SigOutcome::Ok)
        }
        SigCommand::Verify(a) => {
            let body = read_body(&a.scheme.body_file)?;
            let cfg = VerifyConfig {
                scheme: a.scheme.scheme,
                secrets: a.secrets.iter().map(|s| Secret(s.clone())).collect(),
                tolerance_secs: a.tolerance,
                allow_sha1: false,
                public_origin: None,
                generic: generic(&a.scheme)?,
            };
            let verifier = Verifier::new(&cfg, "verify")
                .map_err(|e| anyhow!("{}", cli_field(&e.to_string())))?;
            let headers = Headers::parse_lines(a.headers.iter().map(String::as_str))
                .map_err(|e| anyhow!("-H: {e}"))?;
            let (origin, path) = match &a.scheme.url {
                Some(u) => split_url(u)?,
                None => (None, "/".to_owned()),
            };
            let req = SignedRequest {
                headers: &headers,
                body: &body,
                method: &a.scheme.method,
                origin: origin.as_deref(),
                path: &path,
            };
            match verifier.verify(&req, a.now.unwrap_or(now)) {
                Ok(()) => {
                    writeln!(out, "valid")?;
                    Ok(SigOutcome::Ok)
                }
                Err(hookmesh_filter::VerifyError::UrlUnknown) => {
                    writeln!(out, "invalid: this scheme signs the URL: pass --url")?;
                    Ok(SigOutcome::Invalid)
                }
                Err(e) => {
                    writeln!(out, "invalid: {e}")?;
                    Ok(SigOutcome::Invalid)
                }
            }
        }
    }
}

/// Renames config paths (`verify.secrets[1]`) to the flags users typed (`--secret #2`).
fn cli_field(msg: &str) -> String {
    if let Some(rest) = msg.strip_prefix("verify.secrets[") {
        if let Some((i, tail)) = rest.split_once(']') {
            let n = i.parse::<usize>().map_or(0, |i| i + 1);
            return format!("--secret #{n}{tail}");
        }
    }
    msg.replacen("verify.secrets", "--secret", 1)
        .replacen("verify.generic", "--generic", 1)
}

fn generic(a: &SchemeArgs) -> Result<Option<GenericHmacConfig>> {
    match (&a.generic, a.scheme) {
        (Some(json), SchemeName::GenericHmac) => serde_json::from_str(json)
            .map(Some)
            .map_err(|e| anyhow!("--generic: not valid generic_hmac settings: {e}")),
        (None, SchemeName::GenericHmac) => Err(anyhow!(
            "--generic is required for generic_hmac, e.g. '{{\"header\":\"x-signature\",\"template\":\"{{body}}\"}}'"
        )),
        (Some(_), _) => Err(anyhow!("--generic applies only to --scheme generic_hmac")),
        (None, _) => Ok(None),
    }
}

fn read_body(path: &PathBuf) -> Result<Vec<u8>> {
    let mut body = Vec::new();
    if path.as_os_str() == "-" {
        std::io::stdin()
            .read_to_end(&mut body)
            .context("--body-file -: reading standard input")?;
    } else {
        body = std::fs::read(path).with_context(|| format!("--body-file {}", path.display()))?;
    }
    Ok(body)
}

fn split_url(url: &str) -> Result<(Option<String>, String)> {
    let (scheme, rest) = url
        .split_once("://")
        .filter(|(s, _)| *s == "http" || *s == "https")
        .ok_or_else(|| anyhow!("--url {url}: must start with http:// or https://"))?;
    let at = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(at);
    if authority.is_empty() {
        return Err(anyhow!("--url {url}: has no host"));
    }
    let path = if path.is_empty() {
        "/".to_owned()
    } else {
        path.to_owned()
    };
    Ok((Some(format!("{scheme}://{authority}")), path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn run_args(args: &[&str], now: i64) -> (Result<SigOutcome>, String) {
        let cli = crate::cli::Cli::try_parse_from(
            std::iter::once("hookmesh").chain(args.iter().copied()),
        )
        .unwrap();
        let crate::cli::Command::Sig(cmd) = cli.command else {
            panic!("not a sig command")
        };
        let mut out = Vec::new();
        let r = run(&cmd, now, &mut out);
        (r, String::from_utf8(out).unwrap())
    }

    fn body_file(content: &[u8]) -> PathBuf {
        let p = std::env::temp_dir().join(format!(
            "hookmesh-cli-{}-{}",
            std::process::id(),
            content.len()
        ));
        std::fs::write(&p, content).unwrap();
        p
    }

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    #[test]
    fn sign_then_verify_and_name_the_failing_part() {
        let body = body_file(br#"{"test": 2432232314}"#);
        let b = body.to_str().unwrap();
        let (r, out) = run_args(
            &[
                "sig",
                "sign",
                "--scheme",
                "standard_webhooks",
                "--secret",
                SECRET,
                "--body-file",
                b,
                "--id",
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                "--timestamp",
                "1614265330",
            ],
            0,
        );
        assert_eq!(r.unwrap(), SigOutcome::Ok);
        assert!(
            out.contains("webhook-signature: v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="),
            "{out}"
        );
        let mut args: Vec<String> = [
            "sig",
            "verify",
            "--scheme",
            "standard_webhooks",
            "--secret",
            "whsec_dGhpcyBpcyBhbm90aGVyIHNlY3JldCE=",
            "--secret",
            SECRET,
            "--body-file",
            b,
        ]
        .map(String::from)
        .to_vec();
        for line in out.lines() {
            args.extend(["-H".to_owned(), line.to_owned()]);
        }
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        let (r, out) = run_args(&a, 1614265330);
        assert_eq!((r.unwrap(), out.as_str()), (SigOutcome::Ok, "valid\n"));
        let (r, out) = run_args(&a, 1614265330 + 400);
        assert_eq!(r.unwrap(), SigOutcome::Invalid);
        assert_eq!(
            out,
            "invalid: timestamp too old: signed 400s ago, tolerance is 300s\n"
        );
        let (_, out) = run_args(&a[..a.len() - 2], 1614265330);
        assert_eq!(out, "invalid: missing header `webhook-signature`\n");
    }

    #[test]
    fn bad_input_gets_a_precise_error() {
        let body = body_file(b"x");
        let b = body.to_str().unwrap();
        let err = |args: &[&str]| run_args(args, 0).0.unwrap_err().to_string();
        assert_eq!(
            err(&[
                "sig",
                "verify",
                "--scheme",
                "standard_webhooks",
                "--secret",
                SECRET,
                "--secret",
                "whsec_!!",
                "--body-file",
                b
            ]),
            "--secret #2: not valid base64 after `whsec_`"
        );
        assert!(err(&[
            "sig",
            "verify",
            "--scheme",
            "github",
            "--secret",
            "s",
            "--body-file",
            "/nonexistent/x"
        ])
        .starts_with("--body-file /nonexistent/x"));
        assert_eq!(
            err(&[
                "sig",
                "verify",
                "--scheme",
                "github",
                "--secret",
                "s",
                "--body-file",
                b,
                "-H",
                "nocolon"
            ]),
            "-H: header `nocolon` has no `:` between name and value"
        );
        assert_eq!(
            err(&[
                "sig",
                "verify",
                "--scheme",
                "square",
                "--secret",
                "s",
                "--body-file",
                b,
                "--url",
                "ftp://x"
            ]),
            "--url ftp://x: must start with http:// or https://"
        );
        assert!(err(&[
            "sig",
            "sign",
            "--scheme",
            "generic_hmac",
            "--secret",
            "s",
            "--body-file",
            b
        ])
        .starts_with("--generic is required"));
        assert_eq!(
            err(&[
                "sig",
                "sign",
                "--scheme",
                "twilio",
                "--secret",
                "s",
                "--body-file",
                b
            ]),
            "--secret/--url: this scheme signs the URL: pass --url"
        );
        let bad = crate::cli::Cli::try_parse_from(["hookmesh", "sig", "schemes", "--bogus"]);
        assert!(bad.is_err());
        let bad = crate::cli::Cli::try_parse_from([
            "hookmesh",
            "sig",
            "verify",
            "--scheme",
            "nope",
            "--secret",
            "s",
            "--body-file",
            b,
        ])
        .unwrap_err();
        assert!(
            bad.to_string()
                .contains("unknown scheme `nope`; one of: standard_webhooks"),
            "{bad}"
        );
    }

    #[test]
    fn url_schemes_verify_against_the_given_url() {
        let body = body_file(br#"{"hello":"world"}"#);
        let b = body.to_str().unwrap();
        let url = "https://webhook.site/679a4f3a-dcfa-49ee-bac5-9d0edad886b9";
        let (_, out) = run_args(
            &[
                "sig",
                "verify",
                "--scheme",
                "square",
                "--secret",
                "signature-key",
                "--body-file",
                b,
                "--url",
                url,
                "-H",
                "x-square-hmacsha256-signature: 0zOZ4nZmPmZvGEpkoghYQgrZKxWNEcZtzZFOr8kUdfI=",
            ],
            0,
        );
        assert_eq!(out, "valid\n");
        let (_, out) = run_args(
            &[
                "sig",
                "verify",
                "--scheme",
                "square",
                "--secret",
                "signature-key",
                "--body-file",
                b,
                "-H",
                "x-square-hmacsha256-signature: 0zOZ4nZmPmZvGEpkoghYQgrZKxWNEcZtzZFOr8kUdfI=",
            ],
            0,
        );
        assert_eq!(out, "invalid: this scheme signs the URL: pass --url\n");
        let (_, out) = run_args(
            &[
                "sig",
                "verify",
                "--scheme",
                "square",
                "--secret",
                "signature-key",
                "--body-file",
                b,
                "--url",
                "https://webhook.site/other",
                "-H",
                "x-square-hmacsha256-signature: 0zOZ4nZmPmZvGEpkoghYQgrZKxWNEcZtzZFOr8kUdfI=",
            ],
            0,
        );
        assert_eq!(out, "invalid: no configured secret matches the signature\n");
    }
}
