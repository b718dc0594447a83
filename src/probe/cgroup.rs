//! The process's own memory cgroup: containers must see their limit, not the host's RAM.
//!
//! Found through `/proc/self/cgroup` and `/proc/self/mountinfo`. cgroup v2 reads
//! `memory.max`, `memory.high`, `memory.current` and `memory.stat`; v1 (the fallback) reads
//! `memory.limit_in_bytes`, `memory.usage_in_bytes` and `memory.stat`. The tightest limit on the
//! path from the process's cgroup up to the root applies, and usage is read where it is set.
//! Inactive file pages (reclaimable page cache) count as available, as lxcfs does.

use std::fs;
use std::path::{Path, PathBuf};

/// Which cgroup hierarchy the limit came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupVersion {
    /// The unified hierarchy.
    V2,
    /// The legacy `memory` controller.
    V1,
}

/// A memory limit and the usage under it, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CgroupMemory {
    /// The hierarchy it came from.
    pub version: CgroupVersion,
    /// The limit.
    pub limit: u64,
    /// Usage minus reclaimable page cache.
    pub used: u64,
}

/// v1 reports "no limit" as a huge page-aligned number; anything this large is no limit.
const NO_LIMIT_V1: u64 = 1 << 60;

/// Where the process's memory cgroup lives, found once.
#[derive(Debug, Clone)]
pub(crate) struct CgroupLocator {
    version: CgroupVersion,
    /// Directories from the process's cgroup up to the mount root.
    dirs: Vec<PathBuf>,
}

impl CgroupLocator {
    /// Finds the process's memory cgroup, or `None` when there is none to read.
    pub(crate) fn discover() -> Option<Self> {
        let cgroup = fs::read_to_string("/proc/self/cgroup").ok()?;
        let mountinfo = fs::read_to_string("/proc/self/mountinfo").ok()?;
        Self::from_texts(&cgroup, &mountinfo, Path::new("/"))
    }

    /// Finds it from the texts of `/proc/self/cgroup` and `/proc/self/mountinfo`, with mount
    /// points taken relative to `root` (tests pass a temporary directory).
    pub(crate) fn from_texts(cgroup: &str, mountinfo: &str, root: &Path) -> Option<Self> {
        let mut v2_path = None;
        let mut v1_path = None;
        for line in cgroup.lines() {
            let mut parts = line.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            if controllers.is_empty() {
                v2_path = Some(path.to_string());
            } else if controllers.split(',').any(|c| c == "memory") {
                v1_path = Some(path.to_string());
            }
        }
        for line in mountinfo.lines() {
            let Some((left, right)) = line.split_once(" - ") else {
                continue;
            };
            let left: Vec<&str> = left.split(' ').collect();
            let right: Vec<&str> = right.split(' ').collect();
            if left.len() < 5 || right.len() < 3 {
                continue;
            }
            let (mount_root, mount_point, fs_type, super_opts) =
                (left[3], left[4], right[0], right[2]);
            let (version, path) = match fs_type {
                "cgroup2" => match &v2_path {
                    Some(p) => (CgroupVersion::V2, p),
                    None => continue,
                },
                "cgroup" if super_opts.split(',').any(|o| o == "memory") => match &v1_path {
                    Some(p) => (CgroupVersion::V1, p),
                    None => continue,
                },
                _ => continue,
            };
            let relative = path
                .strip_prefix(mount_root)
                .unwrap_or(path)
                .trim_start_matches('/');
            let base = root.join(mount_point.trim_start_matches('/'));
            let mut dirs = Vec::new();
            let mut current = base.join(relative);
            loop {
                if current.is_dir() {
                    dirs.push(current.clone());
                }
                if current == base || !current.pop() || !current.starts_with(&base) {
                    break;
                }
            }
            if !dirs.is_empty() {
                return Some(CgroupLocator { version, dirs });
            }
        }
        None
    }

    /// Reads the tightest limit and the usage under it; `None` when no limit is set.
    pub(crate) fn read(&self) -> Option<CgroupMemory> {
        let mut best: Option<(u64, &Path)> = None;
        for dir in &self.dirs {
            let limit = match self.version {
                CgroupVersion::V2 => {
                    let max = read_limit(&dir.join("memory.max"));
                    let high = read_limit(&dir.join("memory.high"));
                    match (max, high) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    }
                }
                CgroupVersion::V1 => {
                    read_limit(&dir.join("memory.limit_in_bytes")).filter(|l| *l < NO_LIMIT_V1)
                }
            };
            if let Some(limit) = limit {
                if best.is_none_or(|(b, _)| limit < b) {
                    best = Some((limit, dir));
                }
            }
        }
        let (limit, dir) = best?;
        let (usage_file, inactive_key) = match self.version {
            CgroupVersion::V2 => ("memory.current", "inactive_file"),
            CgroupVersion::V1 => ("memory.usage_in_bytes", "total_inactive_file"),
        };
        let usage: u64 = fs::read_to_string(dir.join(usage_file))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let inactive = fs::read_to_string(dir.join("memory.stat"))
            .ok()
            .and_then(|stat| stat_value(&stat, inactive_key))
            .unwrap_or(0);
        Some(CgroupMemory {
            version: self.version,
            limit,
            used: usage.saturating_sub(inactive),
        })
    }
}

/// A limit file's value; `None` for "max", a missing file, or garbage.
fn read_limit(path: &Path) -> Option<u64> {
    let text = fs::read_to_string(path).ok()?;
    let text = text.trim();
    if text == "max" {
        return None;
    }
    text.parse().ok().filter(|v| *v > 0)
}

/// The value of `key` in a `memory.stat` file.
fn stat_value(stat: &str, key: &str) -> Option<u64> {
    stat.lines().find_map(|line| {
        let (name, value) = line.split_once(' ')?;
        (name == key).then(|| value.trim().parse().ok()).flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) {
        fs::create_dir_all(dir).unwrap();
        fs::write(dir.join(name), text).unwrap();
    }

    fn temp_root(name: &str) -> PathBuf {
        let root =
            std::env::temp_dir().join(format!("poolwarden-cgroup-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        root
    }

    const MOUNTINFO_V2: &str =
        "30 24 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n";

    #[test]
    fn v2_takes_the_tightest_limit_on_the_path_and_discounts_inactive_file() {
        let root = temp_root("v2");
        let parent = root.join("sys/fs/cgroup/app.slice");
        let own = parent.join("svc.scope");
        write(&parent, "memory.max", "1073741824\n");
        write(&parent, "memory.current", "900000000\n");
        write(
            &parent,
            "memory.stat",
            "anon 1\ninactive_file 100000000\nactive_file 5\n",
        );
        write(&own, "memory.max", "max\n");
        write(&own, "memory.high", "max\n");
        write(&own, "memory.current", "1\n");
        let locator =
            CgroupLocator::from_texts("0::/app.slice/svc.scope\n", MOUNTINFO_V2, &root).unwrap();
        let reading = locator.read().unwrap();
        assert_eq!(reading.version, CgroupVersion::V2);
        assert_eq!(reading.limit, 1 << 30);
        assert_eq!(reading.used, 800_000_000);
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn v2_without_any_limit_reads_none() {
        let root = temp_root("v2-none");
        let own = root.join("sys/fs/cgroup/user.slice");
        write(&own, "memory.max", "max\n");
        write(&own, "memory.current", "123\n");
        let locator = CgroupLocator::from_texts("0::/user.slice\n", MOUNTINFO_V2, &root).unwrap();
        assert_eq!(locator.read(), None);
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn v1_memory_controller_is_the_fallback() {
        let root = temp_root("v1");
        let own = root.join("sys/fs/cgroup/memory/docker/abc");
        write(&own, "memory.limit_in_bytes", "536870912\n");
        write(&own, "memory.usage_in_bytes", "300000000\n");
        write(
            &own,
            "memory.stat",
            "cache 9\ntotal_inactive_file 50000000\n",
        );
        let mountinfo = "40 30 0:35 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n";
        let locator =
            CgroupLocator::from_texts("4:memory:/docker/abc\n2:cpu:/x\n", mountinfo, &root)
                .unwrap();
        let reading = locator.read().unwrap();
        assert_eq!(reading.version, CgroupVersion::V1);
        assert_eq!(reading.limit, 512 << 20);
        assert_eq!(reading.used, 250_000_000);
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn garbage_gives_no_locator() {
        assert!(
            CgroupLocator::from_texts("garbage", "more garbage", Path::new("/nonexistent"))
                .is_none()
        );
    }
}
