//! Tests against sysfs fixture trees, file-backed mappings and a socketpair
//! standing in for `/dev/uioN`.

use crate::*;
use std::fs;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::symlink;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tempfile::TempDir;

const PAGE: u64 = 4096;

/// A fake `/sys` + `/dev` in a tempdir.
struct Fixture {
    dir: TempDir,
}

fn put(path: &Path, content: &str) {
    fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    fs::write(path, content).expect("write fixture file");
}

impl Fixture {
    fn new() -> Self {
        let dir = TempDir::new().expect("tempdir");
        fs::create_dir_all(dir.path().join("sys/class/uio")).expect("mkdir");
        fs::create_dir_all(dir.path().join("sys/bus/pci/drivers/uio_pci_generic")).expect("mkdir");
        fs::create_dir_all(dir.path().join("sys/bus/platform")).expect("mkdir");
        fs::create_dir_all(dir.path().join("dev")).expect("mkdir");
        Self { dir }
    }

    fn sys(&self) -> PathBuf {
        self.dir.path().join("sys")
    }

    fn sysfs(&self) -> Sysfs {
        Sysfs::new(self.sys(), self.dir.path().join("dev"))
    }

    fn uio_files(dir: &Path, name: &str, event: &str) {
        put(&dir.join("name"), &format!("{name}\n"));
        put(&dir.join("version"), "0.01.0\n");
        put(&dir.join("event"), &format!("{event}\n"));
    }

    /// uioN bound by uio_pci_generic to the PCI function `bdf`, with one map
    /// (BAR0, 4 KiB) and a matching `resource0` file.
    fn add_pci(&self, n: u32, bdf: &str, vendor: &str, device: &str) -> PathBuf {
        let pci = self.sys().join("devices/pci0000:00").join(bdf);
        put(&pci.join("vendor"), &format!("{vendor}\n"));
        put(&pci.join("device"), &format!("{device}\n"));
        put(&pci.join("subsystem_vendor"), "0x1af4\n");
        put(&pci.join("subsystem_device"), "0x1100\n");
        let mut config = vec![0u8; 64];
        config[4..6].copy_from_slice(&0x0507u16.to_le_bytes()); // INTx disabled + mem/io/master
        fs::write(pci.join("config"), config).expect("config");
        put(
            &pci.join("resource"),
            "0x00000000fea00000 0x00000000fea00fff 0x0000000000040200\n\
             0x0000000000000000 0x0000000000000000 0x0000000000000000\n\
             0x000000000000c000 0x000000000000c01f 0x0000000000040101\n\
             0x0000000000000000 0x0000000000000000 0x0000000000000000\n\
             0x0000000000000000 0x0000000000000000 0x0000000000000000\n\
             0x0000000000000000 0x0000000000000000 0x0000000000000000\n\
             0x0000000000000000 0x0000000000000000 0x0000000000000000\n",
        );
        fs::write(pci.join("resource0"), vec![0u8; PAGE as usize]).expect("resource0");
        symlink("../../../bus/pci", pci.join("subsystem")).expect("symlink");
        symlink("../../../bus/pci/drivers/uio_pci_generic", pci.join("driver")).expect("symlink");
        let uio = pci.join(format!("uio/uio{n}"));
        Self::uio_files(&uio, "uio_pci_generic", "7");
        put(&uio.join("maps/map0/addr"), "0x00000000fea00000\n");
        put(&uio.join("maps/map0/size"), "0x0000000000001000\n");
        put(&uio.join("maps/map0/offset"), "0x0\n");
        put(&uio.join("maps/map0/name"), "edu-mmio\n");
        symlink(format!("../../../{bdf}"), uio.join("device")).expect("symlink");
        symlink(format!("../../devices/pci0000:00/{bdf}/uio/uio{n}"), self.sys().join(format!("class/uio/uio{n}")))
            .expect("symlink");
        uio
    }

    /// uioN from uio_pdrv_genirq on a platform device, with two maps.
    fn add_platform(&self, n: u32, name: &str) -> PathBuf {
        let plat = self.sys().join(format!("devices/platform/soc/3f00{n}000.{name}"));
        symlink("../../../../bus/platform", {
            fs::create_dir_all(&plat).expect("mkdir");
            plat.join("subsystem")
        })
        .expect("symlink");
        let uio = plat.join(format!("uio/uio{n}"));
        Self::uio_files(&uio, name, "0");
        put(&uio.join("maps/map0/addr"), "0x3f003000\n");
        put(&uio.join("maps/map0/size"), "0x1000\n");
        put(&uio.join("maps/map0/offset"), "0x0\n");
        put(&uio.join("maps/map1/addr"), "0x3f004000\n");
        put(&uio.join("maps/map1/size"), "0x1000\n");
        put(&uio.join("maps/map1/offset"), "0x10\n");
        symlink(format!("../../../3f00{n}000.{name}"), uio.join("device")).expect("symlink");
        symlink(plat.join(format!("uio/uio{n}")), self.sys().join(format!("class/uio/uio{n}"))).expect("symlink");
        // The device node: a regular file with two pages, map M at M * page.
        let mut node = vec![0u8; 2 * PAGE as usize];
        node[PAGE as usize..PAGE as usize + 4].copy_from_slice(&0xfeed_f00du32.to_ne_bytes());
        fs::write(self.dir.path().join(format!("dev/uio{n}")), node).expect("dev node");
        uio
    }
}

fn expect_malformed(err: UioError, file_suffix: &str) {
    match &err {
        UioError::Malformed { path, .. } => assert!(path.ends_with(file_suffix), "{err} should name {file_suffix}"),
        other => panic!("expected Malformed naming {file_suffix}, got {other:?}"),
    }
    assert!(err.to_string().contains(file_suffix), "message {err} should name {file_suffix}");
}

#[test]
fn discovers_pci_device_with_maps_and_identity() {
    let fx = Fixture::new();
    fx.add_pci(0, "0000:00:03.0", "0x1234", "0x11e8");
    let devs = fx.sysfs().devices().expect("discovery");
    assert_eq!(devs.len(), 1);
    let d = &devs[0];
    assert_eq!((d.number, d.name.as_str(), d.version.as_str(), d.event_count), (0, "uio_pci_generic", "0.01.0", 7));
    assert_eq!(
        d.maps,
        vec![UioMap { index: 0, name: Some("edu-mmio".into()), addr: 0xfea0_0000, size: 0x1000, offset: 0 }]
    );
    assert_eq!(d.dev_node, fx.dir.path().join("dev/uio0"));
    let pci = d.pci.as_ref().expect("PCI identity");
    assert_eq!(pci.address, PciAddress { domain: 0, bus: 0, device: 3, function: 0 });
    assert_eq!(pci.address.to_string(), "0000:00:03.0");
    assert_eq!((pci.vendor, pci.device, pci.subsystem_vendor, pci.subsystem_device), (0x1234, 0x11e8, 0x1af4, 0x1100));
    assert_eq!(pci.driver.as_deref(), Some("uio_pci_generic"));
    assert!(pci.config.ends_with("0000:00:03.0/config"));
    assert_eq!(pci.bars.len(), 2, "empty BARs are skipped: {:?}", pci.bars);
    assert_eq!((pci.bars[0].index, pci.bars[0].start, pci.bars[0].size), (0, 0xfea0_0000, 0x1000));
    assert!(pci.bars[0].is_memory() && pci.bars[0].path.ends_with("resource0"));
    assert_eq!((pci.bars[1].index, pci.bars[1].size), (2, 0x20));
    assert!(!pci.bars[1].is_memory());
    assert_eq!(d.describe(), "uio0 (uio_pci_generic, PCI 0000:00:03.0)");
}

#[test]
fn discovers_platform_device_without_pci_identity() {
    let fx = Fixture::new();
    fx.add_platform(1, "timer");
    fx.add_pci(0, "0000:00:03.0", "0x1234", "0x11e8");
    let devs = fx.sysfs().devices().expect("discovery");
    assert_eq!(devs.iter().map(|d| d.number).collect::<Vec<_>>(), vec![0, 1], "sorted by N");
    let t = &devs[1];
    assert_eq!(t.name, "timer");
    assert!(t.pci.is_none());
    assert_eq!(t.maps.len(), 2);
    assert_eq!(t.maps[1], UioMap { index: 1, name: None, addr: 0x3f00_4000, size: 0x1000, offset: 0x10 });
}

#[test]
fn missing_map_size_is_an_error_naming_the_file() {
    let fx = Fixture::new();
    let uio = fx.add_platform(0, "gpio");
    fs::remove_file(uio.join("maps/map1/size")).expect("rm");
    let err = fx.sysfs().devices().expect_err("must fail");
    match &err {
        UioError::Io { path, source } => {
            assert!(path.ends_with("maps/map1/size"));
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(err.to_string().contains("maps/map1/size"));
}

#[test]
fn non_hex_map_addr_is_an_error_naming_the_file() {
    let fx = Fixture::new();
    let uio = fx.add_platform(0, "gpio");
    put(&uio.join("maps/map0/addr"), "3f003000zz\n");
    expect_malformed(fx.sysfs().devices().expect_err("must fail"), "maps/map0/addr");
    put(&uio.join("maps/map0/addr"), "0x\n");
    expect_malformed(fx.sysfs().devices().expect_err("must fail"), "maps/map0/addr");
}

#[test]
fn malformed_event_count_is_an_error_naming_the_file() {
    let fx = Fixture::new();
    let uio = fx.add_pci(0, "0000:00:03.0", "0x1234", "0x11e8");
    put(&uio.join("event"), "-1\n");
    expect_malformed(fx.sysfs().devices().expect_err("must fail"), "uio0/event");
}

#[test]
fn dangling_device_symlink_is_an_error_naming_it() {
    let fx = Fixture::new();
    let uio = fx.add_platform(0, "gpio");
    fs::remove_file(uio.join("device")).expect("rm");
    symlink("../../../nowhere", uio.join("device")).expect("symlink");
    let err = fx.sysfs().devices().expect_err("must fail");
    assert!(matches!(&err, UioError::BadSymlink { path, .. } if path.ends_with("uio0/device")), "{err:?}");
    assert!(err.to_string().contains("broken symlink"));
}

#[test]
fn bad_pci_vendor_and_resource_lines_are_errors_naming_the_file() {
    let fx = Fixture::new();
    fx.add_pci(0, "0000:00:03.0", "0x12345", "0x11e8");
    expect_malformed(fx.sysfs().devices().expect_err("vendor too wide"), "0000:00:03.0/vendor");

    let fx = Fixture::new();
    fx.add_pci(0, "0000:00:03.0", "0x1234", "0x11e8");
    put(&fx.sys().join("devices/pci0000:00/0000:00:03.0/resource"), "0xfea00000 0xfea00fff\n");
    expect_malformed(fx.sysfs().devices().expect_err("short resource line"), "0000:00:03.0/resource");
}

#[test]
fn missing_uio_class_says_so() {
    let dir = TempDir::new().expect("tempdir");
    let err = Sysfs::new(dir.path(), dir.path()).devices().expect_err("no class/uio");
    assert!(matches!(err, UioError::NoUioClass { .. }));
    assert!(err.to_string().contains("class/uio") && err.to_string().contains("uio module"));
}

#[test]
fn select_by_pci_id_orders_by_pci_address() {
    let fx = Fixture::new();
    // uio numbering disagrees with PCI order on purpose.
    fx.add_pci(0, "0000:00:04.0", "0x1234", "0x11e8");
    fx.add_pci(1, "0000:00:03.0", "0x1234", "0x11e8");
    fx.add_pci(2, "0000:00:02.0", "0x1af4", "0x1000");
    let sysfs = fx.sysfs();
    let first = sysfs.find(&"pci:1234:11e8".parse().expect("selector")).expect("found");
    let second = sysfs.find(&"pci:1234:11e8@1".parse().expect("selector")).expect("found");
    assert_eq!((first.number, second.number), (1, 0));
    let err = sysfs.find(&"pci:1234:11e8@2".parse().expect("selector")).expect_err("only two");
    let msg = err.to_string();
    assert!(msg.starts_with("no UIO device with PCI id 1234:11e8 at index 2 under"), "{msg}");
    assert!(msg.ends_with("(found 2)"), "{msg}");
}

#[test]
fn select_by_name_and_index_and_number() {
    let fx = Fixture::new();
    fx.add_platform(3, "gpio");
    fx.add_platform(1, "timer");
    fx.add_platform(2, "gpio");
    let sysfs = fx.sysfs();
    assert_eq!(sysfs.find(&"name:gpio".parse().expect("sel")).expect("found").number, 2);
    assert_eq!(sysfs.find(&"name:gpio@1".parse().expect("sel")).expect("found").number, 3);
    assert_eq!(sysfs.find(&"uio1".parse().expect("sel")).expect("found").name, "timer");
    let err = sysfs.find(&"name:net".parse().expect("sel")).expect_err("absent");
    assert!(err.to_string().contains("named \"net\"") && err.to_string().ends_with("(found 0)"), "{err}");
}

#[test]
fn selector_parsing_accepts_documented_forms_and_rejects_others() {
    assert_eq!(
        "pci:1234:11e8".parse::<Selector>().expect("ok"),
        Selector::Pci { vendor: 0x1234, device: 0x11e8, index: 0 }
    );
    assert_eq!(
        "pci:1234:11E8@3".parse::<Selector>().expect("ok"),
        Selector::Pci { vendor: 0x1234, device: 0x11e8, index: 3 }
    );
    assert_eq!("name:gpio@1".parse::<Selector>().expect("ok"), Selector::Name { name: "gpio".into(), index: 1 });
    assert_eq!("uio12".parse::<Selector>().expect("ok"), Selector::Number(12));
    assert_eq!(
        "name:gpio@7e200000".parse::<Selector>().expect("ok"),
        Selector::Name { name: "gpio@7e200000".into(), index: 0 },
        "a non-numeric @ suffix is part of the name"
    );
    assert_eq!(
        "name:gpio@7e200000@2".parse::<Selector>().expect("ok"),
        Selector::Name { name: "gpio@7e200000".into(), index: 2 }
    );
    for bad in ["", "pci:1234", "pci:12345:11e8", "pci:zz:11e8", "pci:1234:11e8@x", "name:", "name:@1", "uio", "edu"] {
        let err = bad.parse::<Selector>().expect_err(bad);
        assert!(matches!(err, UioError::BadSelector { .. }), "{bad}: {err:?}");
        assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
    }
}

#[test]
fn pci_address_parsing_is_strict() {
    assert_eq!(
        "0001:0a:1f.7".parse::<PciAddress>(),
        Ok(PciAddress { domain: 1, bus: 0x0a, device: 0x1f, function: 7 })
    );
    for bad in ["0000:00:20.0", "0000:00:03.8", "0000:00:03", "00:03.0", "0000:000:03.0", "0000:00:03.0x"] {
        assert!(bad.parse::<PciAddress>().is_err(), "{bad}");
    }
}

fn temp_file(len: usize) -> (TempDir, PathBuf) {
    let dir = TempDir::new().expect("tempdir");
    let path = dir.path().join("bar");
    fs::write(&path, vec![0u8; len]).expect("write");
    (dir, path)
}

#[test]
fn file_mapping_reads_and_writes_every_width() {
    let (_dir, path) = temp_file(4096);
    let m = Mapping::file(&path, 0, 4096).expect("map");
    assert_eq!(m.len(), 4096);
    m.write32(0x60, 0xdead_beef).expect("w32");
    m.write16(0x100, 0xabcd).expect("w16");
    m.write8(0xfff, 0x5a).expect("w8");
    assert_eq!(m.read32(0x60).expect("r32"), 0xdead_beef);
    assert_eq!(m.read16(0x100).expect("r16"), 0xabcd);
    assert_eq!(m.read8(0xfff).expect("r8"), 0x5a);
    drop(m);
    let bytes = fs::read(&path).expect("read back");
    assert_eq!(&bytes[0x60..0x64], &0xdead_beefu32.to_ne_bytes(), "MAP_SHARED writes reach the file");
}

#[test]
fn out_of_bounds_access_is_refused() {
    let (_dir, path) = temp_file(4096);
    let m = Mapping::file(&path, 0, 4096).expect("map");
    for off in [4096, 4094, usize::MAX - 1, usize::MAX] {
        let err = m.read32(off).expect_err("out of bounds");
        assert!(matches!(err, UioError::OutOfBounds { .. }), "{off:#x}: {err:?}");
        assert!(m.write32(off, 1).is_err());
    }
    assert!(matches!(m.read8(4096), Err(UioError::OutOfBounds { .. })));
    assert!(matches!(m.write16(4095, 0), Err(UioError::OutOfBounds { .. })));
    let msg = m.read32(4096).expect_err("oob").to_string();
    assert!(msg.contains(path.to_str().expect("utf8")) && msg.contains("out of bounds"), "{msg}");
}

#[test]
fn misaligned_access_is_refused() {
    let (_dir, path) = temp_file(4096);
    let m = Mapping::file(&path, 0, 4096).expect("map");
    for off in [1, 2, 3, 0x61] {
        assert!(matches!(m.read32(off), Err(UioError::Misaligned { width: 4, .. })), "{off}");
        assert!(matches!(m.write32(off, 0), Err(UioError::Misaligned { .. })), "{off}");
    }
    assert!(matches!(m.read16(1), Err(UioError::Misaligned { width: 2, .. })));
    assert!(m.read8(1).is_ok(), "bytes have no alignment");
}

#[test]
fn mapping_past_end_of_file_or_empty_is_refused() {
    let (_dir, path) = temp_file(4096);
    assert!(matches!(Mapping::file(&path, 0, 8192), Err(UioError::BadMapRange { .. })));
    assert!(matches!(Mapping::file(&path, 4096, 4096), Err(UioError::BadMapRange { .. })));
    assert!(matches!(Mapping::file(&path, 0, 0), Err(UioError::BadMapRange { .. })));
    let err = Mapping::file(Path::new("/nonexistent/bar"), 0, 4096).expect_err("no file");
    assert!(err.to_string().contains("/nonexistent/bar"));
}

/// A small register block for the typed-handout tests.
#[repr(C)]
struct TestBlock {
    a: volatile_register::RW<u32>,
    b: volatile_register::RO<u32>,
    _pad: [volatile_register::RO<u32>; 2],
}

impl std::fmt::Debug for TestBlock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TestBlock")
    }
}

// SAFETY: repr(C), only volatile-register cells (UnsafeCell<u32>), no Drop,
// 16 bytes; test memory has no read side effects.
unsafe impl RegisterBlock for TestBlock {}

#[test]
fn typed_block_is_handed_out_only_when_it_fits() {
    let (_dir, path) = temp_file(4096);
    let m = Mapping::file(&path, 0, 4096).expect("map");
    let blk = m.block::<TestBlock>(0x100).expect("fits");
    // SAFETY: a write to test memory through the block; no other reference.
    unsafe { blk.a.write(0x1234_5678) };
    assert_eq!(m.read32(0x100).expect("r32"), 0x1234_5678, "block and offset access see the same memory");
    m.write32(0x104, 42).expect("w32");
    assert_eq!(blk.b.read(), 42);
    assert!(m.block::<TestBlock>(4096 - 16).is_ok(), "exactly at the end fits");
    let err = m.block::<TestBlock>(4096 - 8).expect_err("too large");
    assert!(matches!(err, UioError::BlockTooLarge { need: 16, .. }), "{err:?}");
    assert!(matches!(m.block::<TestBlock>(2), Err(UioError::BlockMisaligned { align: 4, .. })));
}

#[test]
fn undersized_mapping_is_refused_for_a_typed_block_naming_the_device() {
    let (_dir, path) = temp_file(4096);
    let m = Mapping::file(&path, 0, 8).expect("map 8 bytes");
    let err = m.block::<TestBlock>(0).expect_err("8 < 16");
    let msg = err.to_string();
    assert!(msg.contains(path.to_str().expect("utf8")) && msg.contains("TestBlock") && msg.contains("0x10"), "{msg}");
}

/// A fixture with platform device uio0 "timer" (two maps), or `None` when
/// this machine's pages are not the 4 KiB its device node layout assumes.
fn platform_timer_with_4k_pages() -> Option<(Fixture, UioDevice)> {
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE).expect("sysconf").expect("page");
    if page as u64 != PAGE {
        return None;
    }
    let fx = Fixture::new();
    fx.add_platform(0, "timer");
    let dev = fx.sysfs().find(&Selector::Number(0)).expect("found");
    Some((fx, dev))
}

#[test]
fn uio_map_n_is_mapped_at_n_pages() {
    let Some((_fx, dev)) = platform_timer_with_4k_pages() else {
        return; // the fixture's node layout assumes 4 KiB pages
    };
    let m1 = Mapping::uio_map(&dev, 1).expect("map1");
    assert_eq!(m1.read32(0).expect("read"), 0xfeed_f00d);
    assert_eq!(m1.phys_addr(), Some(0x3f00_4000));
    assert!(m1.describe().ends_with("dev/uio0 map 1"));
    let err = Mapping::uio_map(&dev, 2).expect_err("no map 2");
    assert_eq!(err.to_string(), "uio0 (timer): no UIO map 2 (the device has 2)");
}

#[test]
fn pci_bar_is_mapped_from_its_resource_file() {
    let fx = Fixture::new();
    fx.add_pci(0, "0000:00:03.0", "0x1234", "0x11e8");
    fx.add_platform(1, "gpio");
    let sysfs = fx.sysfs();
    let dev = sysfs.find(&"pci:1234:11e8".parse().expect("sel")).expect("found");
    let bar0 = Mapping::pci_bar(&dev, 0).expect("bar0");
    assert_eq!((bar0.len(), bar0.phys_addr()), (4096, Some(0xfea0_0000)));
    bar0.write32(0x4, 7).expect("write");
    assert_eq!(bar0.read32(0x4).expect("read"), 7);
    assert!(matches!(Mapping::pci_bar(&dev, 1), Err(UioError::NoSuchBar { bar: 1, .. })));
    let io = Mapping::pci_bar(&dev, 2).expect_err("I/O BAR");
    assert!(io.to_string().contains("I/O port"), "{io}");
    let gpio = sysfs.find(&Selector::Number(1)).expect("gpio");
    let err = Mapping::pci_bar(&gpio, 0).expect_err("not PCI");
    assert_eq!(err.to_string(), "uio1 (gpio): no PCI BAR 0: not a PCI device");
}

#[test]
fn missed_interrupts_are_counted_from_the_event_counter() {
    assert_eq!(missed_between(3, 4), 0);
    assert_eq!(missed_between(3, 6), 2);
    assert_eq!(missed_between(5, 5), 0, "no progress is not a negative miss");
    assert_eq!(missed_between(u32::MAX, 0), 0, "the counter wraps");
    assert_eq!(missed_between(u32::MAX - 1, 2), 3);
}

fn fake_irq(last: u32, reenable: Reenable) -> (Irq, UnixStream) {
    let (ours, peer) = UnixStream::pair().expect("socketpair");
    ours.set_nonblocking(true).expect("nonblocking");
    (Irq::from_fd(OwnedFd::from(ours), "/dev/uio-fake", last, reenable), peer)
}

#[test]
fn wait_times_out_when_no_interrupt_is_pending() {
    let (mut irq, _peer) = fake_irq(0, Reenable::IrqControl);
    assert_eq!(irq.wait(Some(Duration::from_millis(20))).expect("wait"), IrqWait::TimedOut);
    assert_eq!(irq.wait(Some(Duration::ZERO)).expect("wait"), IrqWait::TimedOut);
    assert_eq!(irq.consume().expect("consume"), None, "non-blocking consume sees nothing");
}

#[test]
fn wait_reports_count_and_missed_interrupts() {
    let (mut irq, mut peer) = fake_irq(3, Reenable::IrqControl);
    peer.write_all(&4u32.to_ne_bytes()).expect("send");
    assert_eq!(irq.wait(Some(Duration::from_secs(5))).expect("wait"), IrqWait::Fired { count: 4, missed: 0 });
    peer.write_all(&9u32.to_ne_bytes()).expect("send");
    assert_eq!(irq.wait(None).expect("wait"), IrqWait::Fired { count: 9, missed: 4 });
    assert_eq!(irq.last_count(), 9);
    peer.write_all(&10u32.to_ne_bytes()).expect("send");
    assert_eq!(irq.consume().expect("consume"), Some(IrqWait::Fired { count: 10, missed: 0 }));
}

#[test]
fn wait_on_a_vanished_device_is_an_error_not_a_hang() {
    let (mut irq, peer) = fake_irq(0, Reenable::IrqControl);
    drop(peer);
    let err = irq.wait(Some(Duration::from_secs(5))).expect_err("EOF");
    assert!(err.to_string().contains("/dev/uio-fake"), "{err}");
}

#[test]
fn genirq_reenable_writes_one_to_the_device_node() {
    let (irq, mut peer) = fake_irq(0, Reenable::IrqControl);
    irq.reenable().expect("reenable");
    let mut buf = [0u8; 4];
    peer.read_exact(&mut buf).expect("read");
    assert_eq!(u32::from_ne_bytes(buf), 1);
}

#[test]
fn pci_generic_reenable_clears_only_the_intx_disable_bit() {
    let fx = Fixture::new();
    fx.add_pci(0, "0000:00:03.0", "0x1234", "0x11e8");
    let dev = fx.sysfs().find(&Selector::Number(0)).expect("found");
    let config = dev.pci.as_ref().expect("pci").config.clone();
    let (irq, _peer) = fake_irq(0, Reenable::for_device(&dev).expect("flavour"));
    assert_eq!(irq.reenable_flavour().name(), "pci-intx");
    irq.reenable().expect("reenable");
    let bytes = fs::read(&config).expect("config");
    assert_eq!(u16::from_le_bytes([bytes[4], bytes[5]]), 0x0107, "bit 10 cleared, others kept");
    assert_eq!(bytes.len(), 64);
    irq.reenable().expect("idempotent");
    let again = fs::read(&config).expect("config");
    assert_eq!(again, bytes);
}

#[test]
fn reenable_flavour_comes_from_the_device() {
    let fx = Fixture::new();
    fx.add_pci(0, "0000:00:03.0", "0x1234", "0x11e8");
    let uio = fx.add_platform(1, "timer");
    let sysfs = fx.sysfs();
    let pci = sysfs.find(&Selector::Number(0)).expect("pci");
    let timer = sysfs.find(&Selector::Number(1)).expect("timer");
    assert!(matches!(Reenable::for_device(&pci).expect("pci"), Reenable::PciIntx { .. }));
    assert!(matches!(Reenable::for_device(&timer).expect("timer"), Reenable::IrqControl));
    // A device called uio_pci_generic without a PCI parent cannot be unmasked.
    put(&uio.join("name"), "uio_pci_generic\n");
    let odd = sysfs.find(&Selector::Number(1)).expect("odd");
    let err = Reenable::for_device(&odd).expect_err("no config");
    assert_eq!(
        err.to_string(),
        "uio1 (uio_pci_generic): uio_pci_generic device without a PCI parent; cannot re-enable INTx"
    );
}

#[test]
fn irq_open_starts_from_the_sysfs_event_count() {
    let fx = Fixture::new();
    fx.add_platform(0, "timer");
    let uio = fx.sys().join("class/uio/uio0");
    put(&uio.join("event"), "41\n");
    let dev = fx.sysfs().find(&Selector::Number(0)).expect("found");
    let irq = Irq::open(&dev).expect("open");
    assert_eq!(irq.last_count(), 41);
    assert_eq!(irq.reenable_flavour().name(), "irqcontrol");
    assert!(irq.path().ends_with("dev/uio0"));
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Any offset is either a valid in-bounds, aligned access or an error:
        /// exactly the accesses the spec allows succeed.
        #[test]
        fn access_succeeds_exactly_when_in_bounds_and_aligned(len in 1u64..=8192, offset in prop_oneof![0usize..=8200, any::<usize>()]) {
            let dir = TempDir::new().expect("tempdir");
            let path = dir.path().join("bar");
            fs::write(&path, vec![0u8; 8192]).expect("write");
            let m = Mapping::file(&path, 0, len).expect("map");
            let len = len as usize;
            let ok = |w: usize| offset.checked_add(w).is_some_and(|e| e <= len) && offset % w == 0;
            prop_assert_eq!(m.read8(offset).is_ok(), ok(1));
            prop_assert_eq!(m.read16(offset).is_ok(), ok(2));
            prop_assert_eq!(m.read32(offset).is_ok(), ok(4));
            prop_assert_eq!(m.write32(offset, 0xa5a5_a5a5).is_ok(), ok(4));
            prop_assert_eq!(m.block::<TestBlock>(offset).is_ok(), ok(4) && offset + 16 <= len);
        }

        /// The missed count is the gap minus the one interrupt observed.
        #[test]
        fn missed_is_gap_minus_one(last in any::<u32>(), gap in 1u32..=1000) {
            prop_assert_eq!(missed_between(last, last.wrapping_add(gap)), gap - 1);
        }
    }
}

#[test]
fn owned_block_keeps_its_mapping_alive_and_checks_size() {
    let (_dir, path) = temp_file(4096);
    let block: Block<TestBlock> = Mapping::file(&path, 0, 4096).expect("map").into_block(0x10).expect("fits");
    let moved = std::thread::spawn(move || {
        // SAFETY: a write to test memory through the block; no other reference.
        unsafe { block.a.write(77) };
        block
    })
    .join()
    .expect("thread");
    assert_eq!(moved.b.read(), 0);
    assert_eq!(moved.mapping().read32(0x10).expect("read"), 77);
    assert_eq!(moved.offset(), 0x10);
    let small = Mapping::file(&path, 0, 8).expect("map");
    assert!(matches!(small.into_block::<TestBlock>(0), Err(UioError::BlockTooLarge { .. })));
}

fn device_args(line: &str) -> std::result::Result<(DeviceArgs, Option<String>), String> {
    let mut speed = None;
    let args = parse_device_args(line.split_whitespace().map(String::from), "usage: t", "name:x", |flag, value| {
        match flag {
            "--speed" => speed = Some(value("a speed")?),
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok((args, speed))
}

#[test]
fn device_args_default_to_the_system_paths_and_pass_other_flags_to_the_driver() {
    let (a, speed) = device_args("--speed 9 --device uio3").expect("parses");
    assert_eq!((a.device, a.device_text.as_str()), (Selector::Number(3), "uio3"));
    assert_eq!((a.sysfs, a.dev, speed), ("/sys".into(), "/dev".into(), Some("9".into())));
    let (a, _) = device_args("--device name:g@1 --sysfs /t/sys --dev /t/dev").expect("parses");
    assert_eq!((a.sysfs, a.dev), ("/t/sys".into(), "/t/dev".into()));
}

#[test]
fn device_args_errors_name_the_flag_and_end_with_the_usage() {
    let err = |line| device_args(line).expect_err(line);
    assert_eq!(err(""), "--device is required; usage: t");
    assert_eq!(err("--device"), "--device needs a selector such as name:x; usage: t");
    assert_eq!(err("--device uio0 --sysfs"), "--sysfs needs a directory; usage: t");
    assert_eq!(err("--device uio0 --speed"), "--speed needs a speed; usage: t");
    assert_eq!(err("--device uio0 --fast"), "unknown argument \"--fast\"; usage: t");
    assert!(err("--device pci:zz").starts_with("--device: invalid UIO device selector \"pci:zz\""));
}

#[test]
fn device_args_find_the_device_under_the_given_tree() {
    let fx = Fixture::new();
    fx.add_platform(2, "gpio");
    let line =
        format!("--device name:gpio --sysfs {} --dev {}", fx.sys().display(), fx.dir.path().join("dev").display());
    let (a, _) = device_args(&line).expect("parses");
    assert_eq!(a.find().expect("found").describe(), "uio2 (gpio)");
    let (a, _) = device_args(&format!("{line} --device name:nope")).expect("parses");
    assert!(a.find().is_err());
}

#[test]
fn mapped_block_sits_at_the_map_offset_and_reports_the_mapped_line() {
    let Some((fx, dev)) = platform_timer_with_4k_pages() else {
        return; // the fixture's node layout assumes 4 KiB pages
    };
    let m = MappedBlock::<TestBlock>::uio_map(&dev, 1).expect("map1");
    assert_eq!(m.block.offset(), 0x10, "the sysfs offset of map 1");
    let node = fx.dir.path().join("dev/uio0");
    assert_eq!(
        m.mapped_line("timer", &dev.describe()),
        format!("mapped 0x3f004000 size=0x1000 (timer: uio0 (timer), {} map 1)", node.display())
    );
    assert!(matches!(MappedBlock::<TestBlock>::uio_map(&dev, 2), Err(UioError::NoSuchMap { index: 2, .. })));
}

#[test]
fn mapped_pci_bar_reports_the_bar_address_and_resource_file() {
    let fx = Fixture::new();
    fx.add_pci(0, "0000:00:03.0", "0x1234", "0x11e8");
    let dev = fx.sysfs().find(&"pci:1234:11e8".parse().expect("sel")).expect("found");
    let m = MappedBlock::<TestBlock>::pci_bar(&dev, 0).expect("bar0");
    assert_eq!(m.block.offset(), 0);
    let line = m.mapped_line("edu", &dev.describe());
    assert!(
        line.starts_with("mapped 0xfea00000 size=0x1000 (edu: uio0 (uio_pci_generic, PCI 0000:00:03.0), "),
        "{line}"
    );
    assert!(line.ends_with("0000:00:03.0/resource0)"), "{line}");
}
