//! `berth --version`'s commit and build date, from git and the clock at build time
//! (vergen-gitcl). Without git (a source tarball), the commit reads "unknown".

use vergen_gitcl::{BuildBuilder, Emitter, GitclBuilder};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let build = BuildBuilder::default().build_date(true).build()?;
    let mut emitter = Emitter::default();
    emitter.add_instructions(&build)?;
    if std::path::Path::new(".git").exists() {
        let git = GitclBuilder::default().sha(true).build()?;
        emitter.add_instructions(&git)?;
    } else {
        println!("cargo:rustc-env=VERGEN_GIT_SHA=unknown");
    }
    emitter.emit()?;
    Ok(())
}
