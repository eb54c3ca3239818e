//! End-to-end: `berth diff` between two generations applied with the real engine, which
//! differ in the image tag, a plain environment value, a secret from the env file and a
//! published port. The text is compared with a golden text (the project name, the tag,
//! the ports and the image ID put back as placeholders); the secret's value is in no
//! output.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::{FIXTURE, Project, docker, free_port, image_id};

const SECRET_1: &str = "envfile-secret-first-111";
const SECRET_2: &str = "envfile-secret-second-222";

const WEB: &str = r#"
[project]
name = "{project}"

[rollout]
healthy_deadline = "30s"
min_healthy_time = "300ms"

[services.web]
image = "{image}"
env_file = "web.env"
environment = { VERSION = "{version}" }
ports = ["127.0.0.1:{port}:8080"]
health = { probe = "http", port = 8080, path = "/health", interval = "100ms" }
"#;

/// A second tag of the fixture image, removed again when dropped (the fixture keeps its
/// own tag, so only the name goes).
struct Tag(String);

impl Drop for Tag {
    fn drop(&mut self) {
        docker(&["rmi", &self.0]);
    }
}

#[test]
fn diff_of_two_applied_generations_names_image_env_and_port_changes_and_hides_the_secret() {
    let p = Project::new("diff");
    let tag = Tag(format!("berth-fixture:{}", p.name));
    assert!(docker(&["tag", FIXTURE, &tag.0]).status.success());
    let env = p.dir.path().join("web.env");
    let (port_1, port_2) = (free_port(), free_port());
    let apply = |image: &str, version: &str, port: u16, secret: &str| {
        std::fs::write(&env, format!("UPSTREAM_CREDENTIAL={secret}\nREGION=eu\n")).unwrap();
        std::fs::set_permissions(&env, std::fs::Permissions::from_mode(0o600)).unwrap();
        p.write(
            &WEB.replace("{image}", image)
                .replace("{version}", version)
                .replace("{port}", &port.to_string()),
        );
        let run = p.berth(&["apply"]);
        assert_eq!(run.code, 0, "apply failed:\n{}", run.stderr);
    };
    apply(FIXTURE, "1", port_1, SECRET_1);
    apply(&tag.0, "2", port_2, SECRET_2);

    let id = image_id(FIXTURE).expect("fixture image present");
    let short = &id.strip_prefix("sha256:").unwrap_or(&id)[..12];
    let normalised = |out: &str| {
        out.replace(&p.name, "{project}")
            .replace(short, "{id}")
            .replace(&format!("127.0.0.1:{port_1}:"), "127.0.0.1:{port_1}:")
            .replace(&format!("127.0.0.1:{port_2}:"), "127.0.0.1:{port_2}:")
    };
    let default = p.berth(&["diff"]);
    assert_eq!(default.code, 0, "{}", default.stderr);
    assert_eq!(
        normalised(&default.stdout),
        "\
Changes from generation 1 to generation 2 of project \"{project}\":
  ~ web
      image   berth-fixture:test ({id}) -> berth-fixture:{project} ({id})
      env     ~UPSTREAM_CREDENTIAL (secret)
      env     ~VERSION: 1 -> 2
      port    -127.0.0.1:{port_1}:8080/tcp
      port    +127.0.0.1:{port_2}:8080/tcp
1 changed.
"
    );
    // Named, they are the same two; the other way round, every sign turns.
    let named = p.berth(&["diff", "1", "2"]);
    assert_eq!(named.stdout, default.stdout);
    let back = p.berth(&["diff", "2", "1"]);
    assert!(
        normalised(&back.stdout).contains("      port    +127.0.0.1:{port_1}:8080/tcp\n"),
        "{}",
        back.stdout
    );
    let same = p.berth(&["diff", "2", "2"]);
    assert_eq!((same.code, same.stdout.as_str()), (0, "No changes.\n"));

    let json = p.berth(&["diff", "--json"]);
    assert_eq!(json.code, 0, "{}", json.stderr);
    let v: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    let web = &v["services"][0];
    assert_eq!((v["from"].as_i64(), v["to"].as_i64()), (Some(1), Some(2)));
    assert_eq!(web["image"]["after"]["id"], id.as_str());
    assert_eq!(web["environment"][0]["key"], "UPSTREAM_CREDENTIAL");
    assert_eq!(web["environment"][0]["secret"], true);

    let missing = p.berth(&["diff", "7"]);
    assert_eq!(missing.code, 1);
    assert!(
        missing.stderr.contains("has no generation 7"),
        "{}",
        missing.stderr
    );

    for (what, run) in [
        ("diff", &default),
        ("diff 2 1", &back),
        ("diff --json", &json),
    ] {
        for secret in [SECRET_1, SECRET_2] {
            for (stream, out) in [("stdout", &run.stdout), ("stderr", &run.stderr)] {
                assert!(!out.contains(secret), "{what}'s {stream} shows {secret}");
            }
        }
    }
}
