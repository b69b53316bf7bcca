//! External offset stores for free consumers (no consumer group): where a pipeline
//! started with [`Pipeline::with_offset_store`](crate::Pipeline::with_offset_store)
//! loads its start offsets and saves its committable offsets instead of committing them to a
//! group coordinator. This is Kafka's "storing offsets outside Kafka" pattern
//! (KafkaConsumer javadoc, "Storing Offsets Outside Kafka"), with tidemark's
//! committable-offset rule deciding *what* is saved.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use parking_lot::Mutex;

use crate::commit::PartitionOffset;
use crate::topic_partition::TopicPartition;

/// Where a free consumer keeps its offsets. Every offset is the *next offset to read*
/// (last processed + 1), like a Kafka commit.
///
/// tidemark calls `load` once per assigned partition before it starts, and `save` on
/// the commit policy's schedule, on a graceful stop, and (at-most-once) before it
/// dispatches each polled batch — always from the poll thread, never concurrently,
/// and never with an offset lower than one it saved before for that partition.
pub trait OffsetStore: Send + Sync {
    /// The saved offset of `partition` with its metadata, or `None` when
    /// nothing was ever saved for it (the pipeline's start position or
    /// `auto.offset.reset` decides then).
    ///
    /// # Errors
    /// Any I/O or format error; the pipeline then does not start
    /// ([`Error::OffsetStore`](crate::Error::OffsetStore)).
    fn load(&self, partition: &TopicPartition) -> io::Result<Option<OffsetAndMetadata>>;

    /// Saves `offsets` (one per partition; partitions not listed keep what they
    /// had), each with its metadata (the offset map, which `load` must return
    /// unchanged with its offset). It must be durable when it returns `Ok`: a crash
    /// right after must load these offsets.
    ///
    /// # Errors
    /// Any I/O error; the partitions stay dirty and the save is retried on the next
    /// commit, and the commit callback sees
    /// [`CommitError::OffsetStore`](crate::CommitError::OffsetStore).
    fn save(&self, offsets: &[PartitionOffset]) -> io::Result<()>;
}

/// A saved offset and the metadata saved with it, like Kafka's `OffsetAndMetadata`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OffsetAndMetadata {
    /// The next offset to read.
    pub offset: i64,
    /// The metadata saved with it (tidemark's offset map, or empty).
    pub metadata: String,
}

/// The first line of a [`FileOffsetStore`] file.
const FILE_HEADER: &str =
    "# tidemark offsets v2: topic<TAB>partition<TAB>next offset[<TAB>metadata]";

/// A durable offset store in one text file: each save writes the whole map to
/// `PATH.tmp`, fsyncs it, renames it over `PATH` and fsyncs the directory, so a crash
/// at any moment leaves either the old or the new file, never a torn one.
///
/// Format: a header line, then one `topic<TAB>partition<TAB>offset[<TAB>metadata]`
/// line per partition (Kafka topic names cannot contain tabs or newlines; metadata
/// with a tab or newline is not saved, so a line always parses back). Files of
/// version 1 (no metadata column) read as they are.
#[derive(Debug)]
pub struct FileOffsetStore {
    path: PathBuf,
    offsets: Mutex<BTreeMap<TopicPartition, OffsetAndMetadata>>,
}

impl FileOffsetStore {
    /// Opens the store at `path`, reading what it holds; a missing file is an empty
    /// store (created on the first save).
    ///
    /// # Errors
    /// The file cannot be read, or a line is not `topic<TAB>partition<TAB>offset`
    /// (`InvalidData`, naming the line).
    pub fn open(path: impl Into<PathBuf>) -> io::Result<Self> {
        let path = path.into();
        let offsets = match File::open(&path) {
            Ok(file) => parse(&path, BufReader::new(file))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(e),
        };
        Ok(FileOffsetStore {
            path,
            offsets: Mutex::new(offsets),
        })
    }

    /// Every saved offset, by partition.
    pub fn offsets(&self) -> BTreeMap<TopicPartition, i64> {
        self.offsets
            .lock()
            .iter()
            .map(|(k, v)| (k.clone(), v.offset))
            .collect()
    }

    /// The file this store writes.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn parse(
    path: &Path,
    reader: impl BufRead,
) -> io::Result<BTreeMap<TopicPartition, OffsetAndMetadata>> {
    let mut offsets = BTreeMap::new();
    for (i, line) in reader.lines().enumerate() {
        let line = line?;
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let bad = || {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{}:{}: expected topic<TAB>partition<TAB>offset[<TAB>metadata], found {line:?}",
                    path.display(),
                    i + 1
                ),
            )
        };
        let mut fields = line.split('\t');
        let (Some(topic), Some(partition), Some(offset), metadata, None) = (
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
        ) else {
            return Err(bad());
        };
        let partition: i32 = partition.parse().map_err(|_| bad())?;
        let offset: i64 = offset.parse().map_err(|_| bad())?;
        if topic.is_empty() || partition < 0 || offset < 0 {
            return Err(bad());
        }
        let metadata = metadata.unwrap_or_default().to_string();
        offsets.insert(
            TopicPartition::new(topic, partition),
            OffsetAndMetadata { offset, metadata },
        );
    }
    Ok(offsets)
}

impl OffsetStore for FileOffsetStore {
    fn load(&self, partition: &TopicPartition) -> io::Result<Option<OffsetAndMetadata>> {
        Ok(self.offsets.lock().get(partition).cloned())
    }

    fn save(&self, offsets: &[PartitionOffset]) -> io::Result<()> {
        let mut map = self.offsets.lock();
        let mut next = map.clone();
        for o in offsets {
            let clean = !o.metadata.contains(['\t', '\n', '\r']);
            let metadata = if clean {
                o.metadata.clone()
            } else {
                String::new()
            };
            next.insert(
                TopicPartition::new(&*o.topic, o.partition),
                OffsetAndMetadata {
                    offset: o.offset,
                    metadata,
                },
            );
        }
        let mut text = String::with_capacity(32 * (next.len() + 1));
        text.push_str(FILE_HEADER);
        text.push('\n');
        for (TopicPartition { topic, partition }, saved) in &next {
            text.push_str(&format!("{topic}\t{partition}\t{}", saved.offset));
            if !saved.metadata.is_empty() {
                text.push('\t');
                text.push_str(&saved.metadata);
            }
            text.push('\n');
        }
        let mut tmp_name = self.path.as_os_str().to_owned();
        tmp_name.push(".tmp");
        let tmp = PathBuf::from(tmp_name);
        {
            let mut file = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&tmp)?;
            file.write_all(text.as_bytes())?;
            file.sync_all()?;
        }
        fs::rename(&tmp, &self.path)?;
        // The rename itself is durable only once the directory is synced.
        let dir = match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        File::open(dir)?.sync_all()?;
        *map = next;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(topic: &str, partition: i32, offset: i64) -> PartitionOffset {
        PartitionOffset::new(topic, partition, offset)
    }

    fn offset(o: Option<OffsetAndMetadata>) -> Option<i64> {
        o.map(|o| o.offset)
    }

    #[test]
    fn saves_survive_reopening_and_merge() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("offsets");
        let store = FileOffsetStore::open(&path).unwrap();
        assert_eq!(store.load(&TopicPartition::new("t", 0)).unwrap(), None);
        store.save(&[at("t", 0, 10), at("t", 1, 20)]).unwrap();
        store.save(&[at("t", 1, 25)]).unwrap();
        let reopened = FileOffsetStore::open(&path).unwrap();
        assert_eq!(
            offset(reopened.load(&TopicPartition::new("t", 0)).unwrap()),
            Some(10)
        );
        assert_eq!(
            offset(reopened.load(&TopicPartition::new("t", 1)).unwrap()),
            Some(25)
        );
        assert_eq!(reopened.load(&TopicPartition::new("u", 0)).unwrap(), None);
        assert!(!path.with_file_name("offsets.tmp").exists());
    }

    #[test]
    fn metadata_survives_and_version_1_files_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("offsets");
        fs::write(
            &path,
            "# tidemark offsets v1: topic<TAB>partition<TAB>next offset\nt\t0\t5\n",
        )
        .unwrap();
        let store = FileOffsetStore::open(&path).unwrap();
        assert_eq!(
            offset(store.load(&TopicPartition::new("t", 0)).unwrap()),
            Some(5)
        );
        let mut with_map = at("t", 1, 9);
        with_map.metadata = "tdm1:CQQAAgI".into();
        let mut bad = at("t", 2, 4);
        bad.metadata = "two\tcolumns".into();
        store.save(&[with_map, bad]).unwrap();
        let reopened = FileOffsetStore::open(&path).unwrap();
        let saved = reopened
            .load(&TopicPartition::new("t", 1))
            .unwrap()
            .unwrap();
        assert_eq!((saved.offset, saved.metadata.as_str()), (9, "tdm1:CQQAAgI"));
        assert_eq!(
            reopened
                .load(&TopicPartition::new("t", 2))
                .unwrap()
                .unwrap()
                .metadata,
            ""
        );
        assert_eq!(
            offset(reopened.load(&TopicPartition::new("t", 0)).unwrap()),
            Some(5)
        );
    }

    #[test]
    fn a_malformed_file_is_an_error_naming_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("offsets");
        fs::write(&path, format!("{FILE_HEADER}\nt\t0\t5\nt\tone\t7\n")).unwrap();
        let e = FileOffsetStore::open(&path).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(e.to_string().contains(":3:"), "{e}");
    }

    #[test]
    fn a_failed_save_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing-dir").join("offsets");
        let store = FileOffsetStore::open(&path).unwrap();
        assert!(store.save(&[at("t", 0, 3)]).is_err());
        assert_eq!(store.load(&TopicPartition::new("t", 0)).unwrap(), None);
    }
}
