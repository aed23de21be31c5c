//! `storage_driver` as a real process: an image of the format before block
//! checksums (version 2) still opens, keeps its data and gains its checksum
//! table; a bit flipped in the file afterwards is refused, never returned.

use reinc_proto::{ClientId, FromDriver, Generation, RequestId, ToDriver};
use reinc_runtime::testing::{DriverProcess, Options};
use std::path::Path;
use storage_core::integrity::{format_version, table_offset, verify};
use storage_core::{BLOCK_SIZE, StorageError, StorageReply, StorageRequest, region_bytes};

const BIN: &str = env!("CARGO_BIN_EXE_storage_driver");
const BLOCKS: u64 = 32;

/// A version-2 image: (BLOCKS + 1) blocks, superblock version 2 with one
/// applied write, `data` at block 5 (client block 4), no checksum table.
fn version_2_image(data: &[u8]) -> Vec<u8> {
    let mut img = vec![0u8; (BLOCKS as usize + 1) * BLOCK_SIZE];
    // The superblock a fresh device gets, as a version-2 driver wrote it.
    let mut mem = vec![0u8; region_bytes(BLOCKS) as usize];
    let mut sb = *storage_core::Storage::open(storage_core::RamRegion(&mut mem), BLOCKS).unwrap().superblock();
    sb.applied_count = 1;
    let mut b = sb.encode();
    b[8..12].copy_from_slice(&2u32.to_le_bytes());
    let crc = crc32(&b[..60]);
    b[60..64].copy_from_slice(&crc.to_le_bytes());
    let crc = crc32(&b[..80]);
    b[80..84].copy_from_slice(&crc.to_le_bytes());
    img[..BLOCK_SIZE].copy_from_slice(&b);
    img[5 * BLOCK_SIZE..5 * BLOCK_SIZE + data.len()].copy_from_slice(data);
    img
}

/// CRC-32 (IEEE), bit by bit: the superblock's seal, computed independently.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for b in bytes {
        crc ^= u32::from(*b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

fn start(disk: &Path) -> DriverProcess {
    let mut d = DriverProcess::spawn(
        Path::new(BIN),
        "storage_driver",
        &["--file", disk.to_str().unwrap(), "--blocks", &BLOCKS.to_string()],
        Options::default(),
    );
    d.send(&ToDriver::Init { generation: Generation(1), checkpoint: None });
    assert_eq!(d.recv(|f| f.msg == FromDriver::Ready), Some(true));
    d
}

fn call(d: &mut DriverProcess, seq: u64, req: &StorageRequest<'_>) -> Vec<u8> {
    let id = RequestId { client: ClientId(1), seq };
    let body = postcard::to_allocvec(req).unwrap();
    d.send(&ToDriver::Request { id, body: &body });
    d.recv(|f| match f.msg {
        FromDriver::Reply { id: got, body, .. } if got == id => body.to_vec(),
        other => panic!("expected the reply to {seq}, got {other:?}"),
    })
    .expect("the driver answers")
}

#[test]
fn a_version_2_image_opens_with_its_data_and_a_later_flip_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk.img");
    let data: Vec<u8> = (0..2 * BLOCK_SIZE).map(|i| (i * 7) as u8 | 1).collect();
    std::fs::write(&disk, version_2_image(&data)).unwrap();

    let mut d = start(&disk);
    let body = call(&mut d, 1, &StorageRequest::ReadChecked { lba: 4, blocks: 2 });
    match postcard::from_bytes::<StorageReply<'_>>(&body).unwrap() {
        StorageReply::DataChecked { data: got, tags } => {
            assert_eq!(got, data.as_slice());
            assert_eq!(verify(4, got, tags), Ok(()));
        }
        other => panic!("{other:?}"),
    }
    d.close();
    d.wait_for(std::time::Duration::from_secs(10)).expect("exits on EOF");

    let mut img = std::fs::read(&disk).unwrap();
    assert_eq!(img.len() as u64, region_bytes(BLOCKS), "extended to hold the checksum table");
    assert_eq!(format_version(&img), 3);
    assert!(img[table_offset(BLOCKS) as usize..].iter().any(|b| *b != 0), "the table was built");
    img[6 * BLOCK_SIZE + 10] ^= 0x01; // client block 5
    std::fs::write(&disk, &img).unwrap();

    let mut d = start(&disk);
    for (seq, req) in [StorageRequest::Read { lba: 4, blocks: 2 }, StorageRequest::ReadChecked { lba: 5, blocks: 1 }]
        .iter()
        .enumerate()
    {
        let body = call(&mut d, seq as u64 + 2, req);
        match postcard::from_bytes::<StorageReply<'_>>(&body).unwrap() {
            StorageReply::Error(StorageError::Corrupt { lba: 5, .. }) => {}
            other => panic!("{req:?}: the flipped block came back as {other:?}"),
        }
    }
    d.close();
    d.wait_for(std::time::Duration::from_secs(10)).expect("exits on EOF");
}
