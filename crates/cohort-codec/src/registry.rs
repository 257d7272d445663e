//! Schemas by Confluent schema id, with the resolution plans compiled once.
//!
//! The reader schemas (inputs) and writer schemas (outputs) are the files in
//! `schemas/`, compiled into the binary: the mapping code is written and
//! tested against exactly them. What varies per deployment is which writer
//! schemas producers registered under which ids; the config maps each id to
//! a file (`{ id -> file }`, relative to the schemas directory). Every
//! configured writer schema is checked against its reader at load, so an
//! incompatible schema stops the worker at start-up instead of
//! dead-lettering every record.

use crate::avro::{resolve, Plan};
use crate::error::{RegistryError, SchemaError};
use crate::schema::{compile_str, unqualified, InputKind, Node, RecordType};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A writer schema registered under a Confluent schema id.
#[derive(Debug)]
pub(crate) struct WriterEntry {
    /// Where it came from (file path), for errors and logs.
    pub origin: String,
    /// Full name of its top-level record.
    pub name: String,
    /// Plan to read it as each of cohort's records (by
    /// [`RecordType::index`]); `None` where it is a different record.
    pub plans: Vec<Option<Plan>>,
}

/// The compiled schemas and the schema id map. Build once at start-up and
/// share (`&Registry` or `Arc<Registry>`); decoders and encoders borrow it.
#[derive(Debug)]
pub struct Registry {
    /// Compiled builtin schemas, by [`RecordType::index`].
    pub(crate) builtin: Vec<Node>,
    /// Parsing canonical forms of the builtin schemas, by index.
    canonical: Vec<String>,
    /// Identity plans (writer = reader) for each record: plain Avro.
    pub(crate) plain: Vec<Plan>,
    pub(crate) ids: BTreeMap<u32, WriterEntry>,
    /// Schema id of each builtin schema, when one is configured.
    builtin_ids: BTreeMap<RecordType, u32>,
}

impl Default for Registry {
    fn default() -> Self {
        Registry::builtin()
    }
}

impl Registry {
    /// The schemas compiled into this binary and no schema ids: enough for
    /// plain Avro and JSON.
    pub fn builtin() -> Registry {
        let mut builtin = Vec::new();
        let mut canonical = Vec::new();
        for rt in RecordType::ALL {
            // The embedded schemas are ours and tested (`tests/schemas.rs`).
            let (schema, node) = compile_str(rt.schema_text()).expect("builtin schema compiles");
            builtin.push(node);
            canonical.push(schema.canonical_form());
        }
        let plain = builtin.iter().map(|n| resolve(n, n, "").expect("a schema resolves against itself")).collect();
        Registry { builtin, canonical, plain, ids: BTreeMap::new(), builtin_ids: BTreeMap::new() }
    }

    /// The builtin schemas plus the schema ids in `ids`, each naming a file
    /// relative to `schemas_dir` (or absolute). Every `.avsc` in the
    /// directory must parse, so a broken file is found before it is needed.
    pub fn load<I, P>(schemas_dir: &Path, ids: I) -> Result<Registry, RegistryError>
    where
        I: IntoIterator<Item = (u32, P)>,
        P: AsRef<Path>,
    {
        let mut reg = Registry::builtin();
        let entries = std::fs::read_dir(schemas_dir)
            .map_err(|source| RegistryError::Io { path: schemas_dir.display().to_string(), source })?;
        for entry in entries {
            let path =
                entry.map_err(|source| RegistryError::Io { path: schemas_dir.display().to_string(), source })?.path();
            if path.extension().is_some_and(|e| e == "avsc") {
                let text = read(&path)?;
                compile_str(&text)
                    .map_err(|source| RegistryError::Schema { path: path.display().to_string(), source })?;
            }
        }
        for (id, file) in ids {
            let path: PathBuf = schemas_dir.join(file.as_ref());
            let text = read(&path)?;
            reg.register(id, &text, &path.display().to_string())?;
        }
        Ok(reg)
    }

    /// Registers `schema` (`.avsc` text) under `id`. `origin` names it in
    /// errors. A record with the name of one of cohort's records must be
    /// readable by cohort's schema for it.
    pub fn register(&mut self, id: u32, schema: &str, origin: &str) -> Result<(), RegistryError> {
        if self.ids.contains_key(&id) {
            return Err(RegistryError::DuplicateId { id });
        }
        let (parsed, node) =
            compile_str(schema).map_err(|source| RegistryError::Schema { path: origin.to_string(), source })?;
        let name = node.type_name().to_string();
        let mut plans = Vec::with_capacity(RecordType::ALL.len());
        for rt in RecordType::ALL {
            let reader = &self.builtin[rt.index()];
            let same_record = unqualified(reader.type_name()) == unqualified(&name);
            plans.push(None);
            match resolve(&node, reader, "") {
                Ok(plan) => plans[rt.index()] = Some(plan),
                Err(source) if same_record => {
                    return Err(RegistryError::Incompatible {
                        id,
                        path: origin.to_string(),
                        found: name,
                        expected: rt.full_name(),
                        source,
                    })
                }
                Err(_) => {}
            }
        }
        let canonical = parsed.canonical_form();
        for rt in RecordType::ALL {
            if self.canonical[rt.index()] == canonical {
                self.builtin_ids.entry(rt).or_insert(id);
            }
        }
        self.ids.insert(id, WriterEntry { origin: origin.to_string(), name, plans });
        Ok(())
    }

    /// The schema id under which cohort's own schema for `record` is
    /// registered (needed to write it in the Confluent wire format).
    pub fn id_for(&self, record: RecordType) -> Option<u32> {
        self.builtin_ids.get(&record).copied()
    }

    /// The configured schema ids, with the record name and origin of each.
    pub fn schema_ids(&self) -> impl Iterator<Item = (u32, &str, &str)> {
        self.ids.iter().map(|(id, e)| (*id, e.name.as_str(), e.origin.as_str()))
    }

    pub(crate) fn node(&self, record: RecordType) -> &Node {
        &self.builtin[record.index()]
    }
}

fn read(path: &Path) -> Result<String, RegistryError> {
    std::fs::read_to_string(path).map_err(|source| RegistryError::Io { path: path.display().to_string(), source })
}

/// Checks that a writer schema (`.avsc` text) can be read with cohort's
/// reader schema for `kind`: what a producer team runs before registering a
/// new schema version.
pub fn check_compatible(writer: &str, kind: InputKind) -> Result<(), SchemaError> {
    let (_, node) = compile_str(writer)?;
    let (_, reader) = compile_str(kind.record_type().schema_text())?;
    resolve(&node, &reader, "").map(|_| ())
}
