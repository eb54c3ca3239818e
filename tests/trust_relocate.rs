//! A commit's files never lead berth to a host file (docs/design.md §12), on two paths
//! that checking each named path alone leaves open: a relative symlink inside a directory
//! of the commit that lands in the tree where it sits, but on the host once the directory
//! is copied to `objects/` (shallower), and a desired-state file that is itself a symlink
//! out of the tree. Real git, the loader with the commit's overlay and `Repo::relocate`;
//! no engine.

mod common;

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use common::git::git;

/// A repository at `<root>/work` committed as it is, fetched into `<root>/state`: the
/// repo handle, the commit's tree and the overlay a daemon would load it with.
async fn fetched(
    root: &Path,
) -> (
    berth::git::Repo,
    berth::git::Commit,
    PathBuf,
    berth::spec::Selection,
) {
    let work = root.join("work");
    git(&work, &["init", "-q", "-b", "main"]);
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-qm", "hostile"]);
    let state = root.join("state");
    let host = root.join("host");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::create_dir_all(&host).unwrap();
    let repo = berth::git::Repo::new(
        berth::git::GitSource {
            url: work.display().to_string(),
            reference: berth::git::Reference::Branch("main".into()),
            path: "desired-state".into(),
            poll: std::time::Duration::from_secs(60),
            ssh_key: None,
            known_hosts: None,
            token_file: None,
        },
        &state,
    )
    .unwrap();
    let commit = repo.fetch().await.unwrap();
    let tree = repo.tree(&commit).await.unwrap();
    let selection = berth::spec::Selection {
        overlay: Some(berth::spec::Overlay {
            tree: tree.clone(),
            host,
            grants: Default::default(),
        }),
        ..Default::default()
    };
    (repo, commit, tree, selection)
}

#[tokio::test]
async fn a_relative_symlink_that_climbs_out_of_a_copied_directory_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().canonicalize().unwrap();
    // What the link would read once the directory sits at its shallower copy.
    let secret = root.join("host-secret.sql");
    std::fs::write(&secret, "SELECT 'HOST SECRET';\n").unwrap();
    let work = root.join("work");
    std::fs::create_dir_all(work.join("desired-state")).unwrap();
    let deep = "a/b/c/d/e/f/g/h/i/j/k/l/schema";
    std::fs::create_dir_all(work.join(deep)).unwrap();
    std::fs::write(work.join(deep).join("0001_one.up.sql"), "SELECT 1;\n").unwrap();
    // Thirteen ups from a/…/l/schema stay inside the tree, where a decoy answers; from
    // objects/<id>/schema they reach `/`, and the rest names the host file.
    let rest = &secret.display().to_string()[1..];
    symlink(
        "../".repeat(13) + rest,
        work.join(deep).join("0002_two.up.sql"),
    )
    .unwrap();
    let decoy = work.join(rest);
    std::fs::create_dir_all(decoy.parent().unwrap()).unwrap();
    std::fs::write(&decoy, "SELECT 'decoy in the tree';\n").unwrap();
    std::fs::write(
        work.join("desired-state/stack.toml"),
        format!(
            "[project]\nname = \"p\"\n\n[services.db]\nimage = \"postgres:15\"\n\n\
             [migrations]\nservice = \"db\"\nurl = \"postgresql://u:p@db/x\"\nsource = \"../{deep}\"\n"
        ),
    )
    .unwrap();
    let (_repo, _commit, tree, selection) = fetched(&root).await;
    // Premise: where it sits, the link lands inside the commit's tree (the decoy).
    let here = berth::spec::trust::resolve(&tree.join(deep).join("0002_two.up.sql")).unwrap();
    assert!(here.starts_with(&tree), "{}", here.display());

    let err =
        berth::spec::load_with_env(&tree.join("desired-state"), &selection, &Default::default())
            .expect_err("the commit must be refused")
            .to_string();
    assert!(
        err.contains("0002_two.up.sql") && err.contains("must point down inside it"),
        "{err}"
    );
    assert!(
        err.contains("stack.toml:"),
        "the refusal names its place: {err}"
    );
}

#[tokio::test]
async fn a_desired_state_file_that_is_a_symlink_out_of_the_tree_is_not_read() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().canonicalize().unwrap();
    let host_toml = root.join("host.toml");
    std::fs::write(&host_toml, "API_TOKEN = \"host-only-value\"\n").unwrap();
    let work = root.join("work");
    std::fs::create_dir_all(work.join("desired-state")).unwrap();
    std::fs::write(
        work.join("desired-state/a.toml"),
        "[project]\nname = \"p\"\n\n[services.web]\nimage = \"web:1\"\n",
    )
    .unwrap();
    symlink(&host_toml, work.join("desired-state/b.toml")).unwrap();
    let (_repo, _commit, tree, selection) = fetched(&root).await;
    let err =
        berth::spec::load_with_env(&tree.join("desired-state"), &selection, &Default::default())
            .expect_err("the commit must be refused")
            .to_string();
    assert!(
        err.contains("b.toml") && err.contains("outside the commit's tree"),
        "{err}"
    );
    // The host file was not read: its key is nowhere in what berth says.
    assert!(!err.contains("API_TOKEN"), "{err}");

    // Without the link the same commit loads (the refusal is the link's, nothing else).
    std::fs::remove_file(tree.join("desired-state/b.toml")).unwrap();
    berth::spec::load_with_env(&tree.join("desired-state"), &selection, &Default::default())
        .unwrap();
}
