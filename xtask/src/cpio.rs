//! A writer for the `newc` cpio format, the one the Linux kernel unpacks as an
//! initramfs (Documentation/driver-api/early-userspace/buffer-format.rst).
//!
//! The archive is built in memory from explicit entries, so it needs no root
//! (device nodes such as `/dev/console` are just headers), no `cpio` binary,
//! and is byte-for-byte reproducible (mtime 0, owner root, inode numbers in
//! entry order). It stays uncompressed: the kernel accepts that, the images
//! are a few MiB, and compressing would cost more time than it saves under
//! TCG.

/// File type bits of `st_mode`.
const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFCHR: u32 = 0o020000;
const S_IFLNK: u32 = 0o120000;

/// An in-memory newc archive.
#[derive(Debug, Default)]
pub struct Archive {
    buf: Vec<u8>,
    next_ino: u32,
}

impl Archive {
    /// An empty archive.
    pub fn new() -> Archive {
        Archive { buf: Vec::new(), next_ino: 1 }
    }

    /// Adds a directory (`path` without a leading `/`).
    pub fn dir(&mut self, path: &str, perm: u32) {
        self.entry(path, S_IFDIR | perm, 2, (0, 0), &[]);
    }

    /// Adds a regular file.
    pub fn file(&mut self, path: &str, perm: u32, data: &[u8]) {
        self.entry(path, S_IFREG | perm, 1, (0, 0), data);
    }

    /// Adds a character device node.
    pub fn char_dev(&mut self, path: &str, perm: u32, major: u32, minor: u32) {
        self.entry(path, S_IFCHR | perm, 1, (major, minor), &[]);
    }

    /// Adds a symbolic link to `target` (the link's data is the target path).
    pub fn symlink(&mut self, path: &str, target: &str) {
        self.entry(path, S_IFLNK | 0o777, 1, (0, 0), target.as_bytes());
    }

    fn entry(&mut self, path: &str, mode: u32, nlink: u32, rdev: (u32, u32), data: &[u8]) {
        let name = path.trim_start_matches('/');
        let ino = self.next_ino;
        self.next_ino += 1;
        self.header(ino, mode, nlink, data.len(), rdev, name);
        self.buf.extend_from_slice(data);
        self.pad();
    }

    fn header(&mut self, ino: u32, mode: u32, nlink: u32, size: usize, rdev: (u32, u32), name: &str) {
        let size = u32::try_from(size).expect("initramfs members are far below 4 GiB");
        let namesize = u32::try_from(name.len() + 1).expect("short names");
        // magic, ino, mode, uid, gid, nlink, mtime, filesize, devmajor, devminor,
        // rdevmajor, rdevminor, namesize, check
        let fields = [ino, mode, 0, 0, nlink, 0, size, 0, 0, rdev.0, rdev.1, namesize, 0];
        self.buf.extend_from_slice(b"070701");
        for f in fields {
            self.buf.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.push(0);
        self.pad();
    }

    /// Header+name and data are each padded to a multiple of 4 bytes.
    fn pad(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }

    /// Appends the trailer and returns the archive bytes.
    pub fn finish(mut self) -> Vec<u8> {
        self.header(0, 0, 1, 0, (0, 0), "TRAILER!!!");
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One parsed member: (name, mode, rdev, data).
    type Member = (String, u32, (u32, u32), Vec<u8>);

    /// An independent reader of what the writer produced, following the
    /// kernel's rules, so the tests check the format and not the writer's
    /// own arithmetic.
    fn read(archive: &[u8]) -> Vec<Member> {
        let mut out = Vec::new();
        let mut at = 0;
        loop {
            assert_eq!(&archive[at..at + 6], b"070701", "magic at {at}");
            let field = |i: usize| {
                let s = std::str::from_utf8(&archive[at + 6 + 8 * i..at + 14 + 8 * i]).unwrap();
                u32::from_str_radix(s, 16).unwrap()
            };
            let (mode, size, rmaj, rmin, namesize) = (field(1), field(6), field(9), field(10), field(11));
            let name_start = at + 110;
            let name = std::str::from_utf8(&archive[name_start..name_start + namesize as usize - 1]).unwrap();
            assert_eq!(archive[name_start + namesize as usize - 1], 0, "name NUL-terminated");
            let data_start = (name_start + namesize as usize).next_multiple_of(4);
            let data = archive[data_start..data_start + size as usize].to_vec();
            at = (data_start + size as usize).next_multiple_of(4);
            if name == "TRAILER!!!" {
                assert_eq!(at, archive.len(), "nothing after the trailer");
                return out;
            }
            out.push((name.to_string(), mode, (rmaj, rmin), data));
        }
    }

    #[test]
    fn members_read_back_with_types_and_data() {
        let mut a = Archive::new();
        a.dir("/dev", 0o755);
        a.char_dev("/dev/console", 0o600, 5, 1);
        a.file("/init", 0o755, b"\x7fELF...");
        a.file("etc/plan", 0o644, b"abc");
        let members = read(&a.finish());
        assert_eq!(
            members,
            vec![
                ("dev".into(), 0o040755, (0, 0), vec![]),
                ("dev/console".into(), 0o020600, (5, 1), vec![]),
                ("init".into(), 0o100755, (0, 0), b"\x7fELF...".to_vec()),
                ("etc/plan".into(), 0o100644, (0, 0), b"abc".to_vec()),
            ]
        );
    }

    #[test]
    fn every_member_starts_four_byte_aligned_for_all_name_and_data_lengths() {
        for name_len in 1..6 {
            for data_len in 0..6 {
                let mut a = Archive::new();
                a.file(&"n".repeat(name_len), 0o644, &vec![7u8; data_len]);
                a.file("second", 0o644, b"x");
                let bytes = a.finish();
                assert_eq!(bytes.len() % 4, 0);
                let members = read(&bytes);
                assert_eq!(members[0].3.len(), data_len);
                assert_eq!(members[1].0, "second");
            }
        }
    }

    #[test]
    fn symlinks_carry_their_target_as_data() {
        let mut a = Archive::new();
        a.file("bin/busybox", 0o755, b"\x7fELF");
        a.symlink("bin/dd", "busybox");
        let members = read(&a.finish());
        assert_eq!(members[1], ("bin/dd".into(), 0o120777, (0, 0), b"busybox".to_vec()));
    }

    #[test]
    fn archives_are_reproducible() {
        let build = || {
            let mut a = Archive::new();
            a.dir("bin", 0o755);
            a.file("bin/x", 0o755, b"1234");
            a.finish()
        };
        assert_eq!(build(), build());
    }
}
