//! The container berth itself runs in, when it runs in one of the engine's containers
//! (berth's image with the engine's socket mounted, docs/install.md).
//!
//! berth never recreates, stops, removes or renames that container, whatever labels it
//! carries: the runtime leaves it out of the project's containers (so it is never an
//! orphan to remove, drift to repair or a service to recreate), refuses to stop, remove
//! or rename it, and the pre-flight refuses a desired state whose service would be it
//! (by container name, or by the project's labels), at the service's line.
//!
//! It is found without asking anyone: Docker bind-mounts `/etc/hostname`, `/etc/hosts`
//! and `/etc/resolv.conf` into every container from
//! `<data-root>/containers/<64-hex id>/`, and the mount table (`/proc/self/mountinfo`)
//! shows where each mount came from. The engine is then asked for that container's name
//! and labels. On the host itself no such mount exists and there is no own container.

/// The container this process runs in, as the engine knows it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct OwnContainer {
    pub id: String,
    /// Its name, without Docker's leading `/`.
    pub name: String,
    /// Its `berth.project` and `berth.service` labels, when it has them.
    pub project: Option<String>,
    pub service: Option<String>,
    /// Its network mode (`host`, `bridge`, a network's name): berth's probes reach
    /// services at their addresses on the project's networks, which the host routes to
    /// and a container on another bridge does not.
    pub network_mode: String,
}

impl OwnContainer {
    /// The short ID, as `docker ps` shows it.
    pub fn short_id(&self) -> &str {
        &self.id[..self.id.len().min(12)]
    }
}

/// Whether `id` (a full ID, or a prefix of at least 12 characters) names the container
/// whose full ID is `own`.
pub fn same_id(own: &str, id: &str) -> bool {
    id.len() >= 12 && own.starts_with(id)
}

/// The ID of the container this process runs in, from the mount table's text: the
/// source of the mount on `/etc/hostname` (or `/etc/hosts`, `/etc/resolv.conf`) when it
/// is a file of `…/containers/<id>/`.
pub fn container_id_in(mountinfo: &str) -> Option<String> {
    mountinfo.lines().find_map(|line| {
        // `36 35 98:0 /var/lib/docker/containers/<id>/hostname /etc/hostname rw,… - ext4 …`
        let mut fields = line.split(' ');
        let root = fields.nth(3)?;
        let target = fields.next()?;
        if !matches!(target, "/etc/hostname" | "/etc/hosts" | "/etc/resolv.conf") {
            return None;
        }
        let (_, rest) = root.rsplit_once("/containers/")?;
        let id = rest.split('/').next()?;
        (id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())).then(|| id.to_string())
    })
}

/// The writable layer of this process's root filesystem (the overlay's `upperdir=`), when
/// the root is an overlay: what the engine reports as the container's
/// `GraphDriver.Data.UpperDir`. A container started with `--network container:X` is given
/// X's `/etc/hostname`, so the ID found from that mount is X's; the writable layer tells
/// the two apart.
pub fn root_upperdir_in(mountinfo: &str) -> Option<String> {
    mountinfo.lines().find_map(|line| {
        let (mount, fs) = line.split_once(" - ")?;
        if mount.split(' ').nth(4)? != "/" || !fs.starts_with("overlay ") {
            return None;
        }
        let options = fs.split(' ').nth(2)?;
        options
            .split(',')
            .find_map(|o| o.strip_prefix("upperdir="))
            .map(str::to_string)
    })
}

/// The ID of the container this process runs in, if it runs in one, and the writable
/// layer of its root filesystem ([`root_upperdir_in`]).
pub fn container_id() -> (Option<String>, Option<String>) {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    (container_id_in(&text), root_upperdir_in(&text))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f2a9c0d1e4b5a6978877665544332211aabbccddeeff00112233445566778899";

    #[test]
    fn the_id_comes_from_the_mount_of_etc_hostname() {
        let id = &ID[..64];
        let inside = format!(
            "600 599 0:52 / / rw,relatime - overlay overlay rw,lowerdir=/var/lib/docker/overlay2/l/X\n\
             610 600 254:0 /var/lib/docker/containers/{id}/resolv.conf /etc/resolv.conf rw,relatime - ext4 /dev/vda rw\n\
             611 600 254:0 /var/lib/docker/containers/{id}/hostname /etc/hostname rw,relatime - ext4 /dev/vda rw\n"
        );
        assert_eq!(container_id_in(&inside).as_deref(), Some(id));
        // Another data root, and only /etc/hosts mounted.
        let other = format!(
            "612 600 254:0 /srv/docker-data/containers/{id}/hosts /etc/hosts rw - ext4 /dev/vda rw\n"
        );
        assert_eq!(container_id_in(&other).as_deref(), Some(id));
    }

    #[test]
    fn the_root_overlays_writable_layer_is_read() {
        let inside = "600 599 0:52 / / rw,relatime master:1 - overlay overlay rw,lowerdir=/var/lib/docker/overlay2/l/A:/var/lib/docker/overlay2/l/B,upperdir=/var/lib/docker/overlay2/f00/diff,workdir=/var/lib/docker/overlay2/f00/work\n\
                      610 600 0:53 / /proc rw - proc proc rw\n";
        assert_eq!(
            root_upperdir_in(inside).as_deref(),
            Some("/var/lib/docker/overlay2/f00/diff")
        );
        let host = "22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw\n";
        assert_eq!(root_upperdir_in(host), None);
    }

    #[test]
    fn the_host_and_look_alikes_have_no_own_container() {
        let host = "22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw\n\
                    25 22 0:21 / /proc rw - proc proc rw\n";
        assert_eq!(container_id_in(host), None);
        // A container's directory mounted elsewhere, or a name that is not an ID.
        let id = &ID[..64];
        let elsewhere = format!(
            "30 22 254:0 /var/lib/docker/containers/{id}/hostname /mnt/hostname rw - ext4 /dev/vda rw\n\
             31 22 254:0 /var/lib/docker/containers/not-an-id/hostname /etc/hostname rw - ext4 /dev/vda rw\n"
        );
        assert_eq!(container_id_in(&elsewhere), None);
        assert_eq!(container_id_in(""), None);
    }

    #[test]
    fn it_is_known_by_its_id_or_a_long_prefix() {
        let own = OwnContainer {
            id: ID[..64].to_string(),
            name: "berth".into(),
            ..Default::default()
        };
        assert!(same_id(&own.id, &ID[..64]) && same_id(&own.id, &ID[..12]));
        assert!(!same_id(&own.id, &ID[..6]) && !same_id(&own.id, ""));
        assert_eq!(own.short_id(), &ID[..12]);
    }
}
