//! End-to-end: secrets stay secret (docs/design.md §11). A service with a literal
//! secret-looking variable and a value from its env file is applied with debug logging;
//! neither value may show up in anything berth prints, and the stored generation must not
//! keep a list of secrets in clear.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::Project;

const LITERAL_SECRET: &str = "literal-secret-123";
const ENV_FILE_SECRET: &str = "envfile-secret-456";

const ONE_SERVICE: &str = r#"
[project]
name = "{project}"

[rollout]
healthy_deadline = "30s"
min_healthy_time = "300ms"

[services.app]
image = "berth-fixture:test"
env_file = "app.env"
environment = { API_TOKEN = "literal-secret-123", ROLE = "app" }
health = { probe = "http", port = 8080, path = "/health", interval = "100ms" }
"#;

#[tokio::test]
async fn secrets_never_appear_in_output_or_debug_logs_and_the_store_keeps_no_secret_list() {
    let p = Project::new("secrets");
    p.write(ONE_SERVICE);
    let env = p.dir.path().join("app.env");
    // A key that does not look secret: the value is secret because it came from the file.
    std::fs::write(&env, format!("UPSTREAM_CREDENTIAL={ENV_FILE_SECRET}\n")).unwrap();
    std::fs::set_permissions(&env, std::fs::Permissions::from_mode(0o600)).unwrap();

    let debug = [("BERTH_LOG", "debug")];
    let mut leaks = Vec::new();
    let apply = p.berth_env(&["apply"], &debug);
    assert_eq!(apply.code, 0, "apply failed:\n{}", apply.stderr);
    // The debug log really ran (else this test proves nothing about log redaction).
    assert!(
        apply.stderr.contains("DEBUG"),
        "no debug log lines:\n{}",
        apply.stderr
    );
    // The container did get the real values: redaction is for output only.
    let env_in_container = p.inspect("app", "{{json .Config.Env}}");
    assert!(
        env_in_container.contains(LITERAL_SECRET) && env_in_container.contains(ENV_FILE_SECRET)
    );

    for (what, run) in [
        ("apply", apply),
        ("plan", p.berth_env(&["plan"], &debug)),
        ("status", p.berth_env(&["status"], &debug)),
        ("status --json", p.berth_env(&["status", "--json"], &debug)),
        ("history", p.berth_env(&["history"], &debug)),
        (
            "history --json",
            p.berth_env(&["history", "--json"], &debug),
        ),
    ] {
        for secret in [LITERAL_SECRET, ENV_FILE_SECRET] {
            for (stream, out) in [("stdout", &run.stdout), ("stderr", &run.stderr)] {
                let n = out.matches(secret).count();
                if n > 0 {
                    leaks.push(format!("{what}: {stream} shows {secret:?} {n} times"));
                }
            }
        }
    }
    assert!(leaks.is_empty(), "secrets leaked:\n{}", leaks.join("\n"));

    let store = berth::store::Store::open(&p.state()).await.unwrap();
    let generations = store.history(Some(&p.name)).await.unwrap();
    assert!(!generations.is_empty(), "apply recorded no generation");
    for g in generations {
        assert!(
            !g.spec_json.contains("secret_values"),
            "generation {} stores a secret list: {}",
            g.id,
            g.spec_json
        );
        // What it keeps instead: the names of env-file keys, to rebuild the redactor.
        assert!(
            g.spec_json.contains("UPSTREAM_CREDENTIAL"),
            "{}",
            g.spec_json
        );
    }
}

/// A gate that fails with a secret in its reason (a token in a probe's command, from the
/// project env file): the reason is redacted before it is stored, and nothing shows it.
#[test]
fn a_failure_reason_that_holds_a_secret_is_redacted_in_output_and_in_the_store() {
    const TOKEN: &str = "envtoken-789xyz";
    let p = Project::new("secretfail");
    let env = p.dir.path().join(".env");
    std::fs::write(&env, format!("PROBE_TOKEN={TOKEN}\n")).unwrap();
    std::fs::set_permissions(&env, std::fs::Permissions::from_mode(0o600)).unwrap();
    let good = r#"
[project]
name = "{project}"
env_file = ".env"
[rollout]
healthy_deadline = "2s"
min_healthy_time = "200ms"
[services.web]
image = "berth-fixture:test"
health = { probe = "http", port = 8080, interval = "100ms" }
"#;
    p.write(good);
    assert_eq!(p.berth(&["apply"]).code, 0);
    // The fixture's `probe` exits 1 on a 404: the gate fails, and its reason quotes the
    // command, token and all.
    p.write(&good.replace(
        r#"health = { probe = "http", port = 8080, interval = "100ms" }"#,
        r#"health = { probe = "exec", command = ["/berth-fixture", "probe", "/nowhere?token=${PROBE_TOKEN}"], interval = "100ms" }"#,
    ));
    let run = p.berth(&["apply"]);
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert!(
        run.stderr.contains("<redacted>"),
        "premise: the reason had the token: {}",
        run.stderr
    );
    let mut outputs = vec![("apply", run.stdout + &run.stderr)];
    for args in [
        &["status"][..],
        &["status", "--json"],
        &["history"],
        &["history", "--json"],
    ] {
        let r = p.berth(args);
        outputs.push((args[0], r.stdout + &r.stderr));
    }
    for (what, out) in outputs {
        assert!(!out.contains(TOKEN), "{what} shows the token:\n{out}");
    }
    // The spec keeps the probe's command (a revert needs it); the stored reasons do not.
    let reasons: Vec<Option<String>> = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}?mode=ro", p.state().display()))
            .await
            .unwrap();
        sqlx::query_scalar("SELECT reason FROM generations")
            .fetch_all(&pool)
            .await
            .unwrap()
    });
    assert!(
        reasons.iter().flatten().any(|r| r.contains("<redacted>")),
        "{reasons:?}"
    );
    for r in reasons.iter().flatten() {
        assert!(!r.contains(TOKEN), "a stored reason holds the token: {r}");
    }
}
