//! `hookmesh crds`: the custom resource definitions, generated from the types in [`crate::k8s`].

use crate::k8s::{crd_yaml, crds};
use anyhow::Context;
use kube::ResourceExt;
use std::path::PathBuf;

/// Arguments of `hookmesh crds`.
#[derive(Debug, clap::Args)]
pub struct CrdsArgs {
    /// Write one file per definition (`<name>.yaml`) into this directory instead of printing
    /// them all to standard output.
    #[arg(long, value_name = "DIR")]
    pub out_dir: Option<PathBuf>,
}

/// Prints the definitions as one YAML stream, or writes them to `--out-dir`.
///
/// # Errors
/// When a file cannot be written.
pub fn run(args: &CrdsArgs, out: &mut impl std::io::Write) -> anyhow::Result<()> {
    for (i, crd) in crds().iter().enumerate() {
        let yaml = crd_yaml(crd).context("serialize a CRD")?;
        match &args.out_dir {
            Some(dir) => {
                let path = dir.join(format!("{}.yaml", crd.name_any()));
                std::fs::write(&path, &yaml)
                    .with_context(|| format!("write {}", path.display()))?;
                writeln!(out, "wrote {}", path.display())?;
            }
            None => {
                if i > 0 {
                    writeln!(out, "---")?;
                }
                write!(out, "{yaml}")?;
            }
        }
    }
    Ok(())
}
