//! docs/configuration.md documents every configuration key, and only keys that exist, with the
//! default the binary really has; the package's /etc/vmwarden/vmwarden.toml (debian/vmwarden.toml)
//! is the embedded defaults with every key commented out.
//!
//! The keys come from the config structs themselves, not from a list kept by hand: a tracing
//! serde `Deserializer` walks `Config` as serde sees it (every field of every struct, array
//! elements included: `cluster.peers[].url`), so a field added to `src/config.rs` without a line
//! in the doc fails here, and so does a documented key that was renamed or removed.

use std::cell::RefCell;
use std::collections::BTreeSet;

use serde::de::{self, DeserializeSeed, IntoDeserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use vmwarden::config::{Config, DEFAULT_TOML};

type Error = de::value::Error;

/// Records the dotted path of every field serde asks for.
struct Tracer<'a> {
    path: String,
    seen: &'a RefCell<BTreeSet<String>>,
}

impl<'a> Tracer<'a> {
    fn leaf(&self) {
        self.seen.borrow_mut().insert(self.path.clone());
    }
    fn child(&self, name: &str) -> Tracer<'a> {
        let path = if self.path.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.path)
        };
        Tracer {
            path,
            seen: self.seen,
        }
    }
}

macro_rules! leaf {
    ($($method:ident => $visit:ident($value:expr)),* $(,)?) => {
        $(fn $method<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
            self.leaf();
            v.$visit($value)
        })*
    };
}

impl<'de> de::Deserializer<'de> for Tracer<'_> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Error> {
        Err(de::Error::custom(format!(
            "{}: a type the tracer does not know (extend tests/config_reference.rs)",
            self.path
        )))
    }

    leaf! {
        deserialize_bool => visit_bool(false),
        deserialize_u8 => visit_u64(0),
        deserialize_u16 => visit_u64(0),
        deserialize_u32 => visit_u64(0),
        deserialize_u64 => visit_u64(0),
        deserialize_i8 => visit_i64(0),
        deserialize_i16 => visit_i64(0),
        deserialize_i32 => visit_i64(0),
        deserialize_i64 => visit_i64(0),
        deserialize_f32 => visit_f64(0.0),
        deserialize_f64 => visit_f64(0.0),
        deserialize_str => visit_str(""),
        deserialize_string => visit_str(""),
    }

    fn deserialize_option<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        v.visit_some(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        self.leaf();
        let elem = Tracer {
            path: format!("{}[]", self.path),
            seen: self.seen,
        };
        v.visit_seq(OneElement(Some(elem)))
    }

    fn deserialize_map<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        self.leaf();
        v.visit_map(Fields {
            parent: self,
            fields: &[],
            next: 0,
        })
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, Error> {
        v.visit_map(Fields {
            parent: self,
            fields,
            next: 0,
        })
    }

    serde::forward_to_deserialize_any! {
        char bytes byte_buf unit unit_struct newtype_struct tuple tuple_struct enum identifier
        ignored_any i128 u128
    }
}

struct OneElement<'a>(Option<Tracer<'a>>);

impl<'de> SeqAccess<'de> for OneElement<'_> {
    type Error = Error;
    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Error> {
        self.0.take().map(|t| seed.deserialize(t)).transpose()
    }
}

struct Fields<'a> {
    parent: Tracer<'a>,
    fields: &'static [&'static str],
    next: usize,
}

impl<'de> MapAccess<'de> for Fields<'_> {
    type Error = Error;
    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        match self.fields.get(self.next) {
            None => Ok(None),
            Some(f) => seed.deserialize((*f).into_deserializer()).map(Some),
        }
    }
    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        let f = self.fields[self.next];
        self.next += 1;
        seed.deserialize(self.parent.child(f))
    }
}

/// Every key of `Config` as serde reads it; `x[]` elements that are plain values are not keys.
fn struct_keys() -> BTreeSet<String> {
    let seen = RefCell::new(BTreeSet::new());
    Config::deserialize(Tracer {
        path: String::new(),
        seen: &seen,
    })
    .expect("tracing the config structs");
    seen.into_inner()
        .into_iter()
        .filter(|k| !k.ends_with("[]"))
        .collect()
}

/// Every leaf key of the embedded default file with its value as TOML writes it.
fn default_values() -> Vec<(String, String)> {
    fn walk(t: &toml::Table, prefix: &str, out: &mut Vec<(String, String)>) {
        for (k, v) in t {
            let path = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            match v {
                toml::Value::Table(t) => walk(t, &path, out),
                v => out.push((path, v.to_string())),
            }
        }
    }
    let mut out = Vec::new();
    walk(&DEFAULT_TOML.parse().unwrap(), "", &mut out);
    out
}

/// `| `key` | default | meaning |` rows of docs/configuration.md: (key, default column).
fn documented() -> Vec<(String, String)> {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/configuration.md"
    ))
    .expect("docs/configuration.md");
    doc.lines()
        .filter_map(|l| {
            let cells: Vec<&str> = l.trim().strip_prefix('|')?.split(" | ").collect();
            let key = cells.first()?.trim().strip_prefix('`')?.strip_suffix('`')?;
            let default = cells.get(1)?.trim();
            let default = default
                .strip_prefix('`')
                .and_then(|d| d.strip_suffix('`'))
                .unwrap_or(default);
            Some((key.to_string(), default.to_string()))
        })
        .collect()
}

#[test]
fn the_tracer_sees_what_serde_reads() {
    let keys = struct_keys();
    for k in [
        "agent.listen",
        "lock.sanlock.leases",
        "lock.sanlock.leases[].offset",
        "cluster.peers[].migrate_uri",
        "alertmanager.rules[].matchers",
        "notify.email.to",
        "api.tokens[].role",
    ] {
        assert!(keys.contains(k), "{k} not traced: {keys:?}");
    }
    // Every key of the embedded file is a struct key (deny_unknown_fields makes the converse
    // hold for the file: the tracer must not invent keys either).
    for (k, _) in default_values() {
        assert!(keys.contains(&k), "{k} in config/vmwarden.toml, not traced");
    }
    let leaves_in_file: BTreeSet<String> = default_values().into_iter().map(|(k, _)| k).collect();
    for k in &keys {
        if !k.contains("[]") && !k.ends_with(".matchers") {
            assert!(
                leaves_in_file.contains(k),
                "{k}: a config field without a default in config/vmwarden.toml (the agent must run with no file)"
            );
        }
    }
}

#[test]
fn every_key_is_documented_and_every_documented_key_exists() {
    let keys = struct_keys();
    let doc = documented();
    let doc_keys: BTreeSet<String> = doc.iter().map(|(k, _)| k.clone()).collect();
    let missing: Vec<_> = keys.difference(&doc_keys).collect();
    let defaults = default_values();
    let rows: Vec<String> = missing
        .iter()
        .map(|k| {
            let d = defaults
                .iter()
                .find(|(dk, _)| dk == *k)
                .map(|(_, v)| format!("`{v}`"))
                .unwrap_or_else(|| "—".into());
            format!("| `{k}` | {d} | … |")
        })
        .collect();
    assert!(
        missing.is_empty(),
        "keys of src/config.rs not in docs/configuration.md:\n{}",
        rows.join("\n")
    );
    let unknown: Vec<_> = doc_keys.difference(&keys).collect();
    assert!(
        unknown.is_empty(),
        "docs/configuration.md documents keys the config does not have: {unknown:?}"
    );
    let mut twice = BTreeSet::new();
    for (k, _) in &doc {
        assert!(twice.insert(k), "{k} documented twice");
    }
}

#[test]
fn documented_defaults_are_the_real_ones() {
    let doc = documented();
    for (key, value) in default_values() {
        let (_, written) = doc.iter().find(|(k, _)| *k == key).unwrap_or_else(|| {
            panic!("{key} is not documented (see every_key_is_documented_and_every_documented_key_exists)")
        });
        assert_eq!(
            *written, value,
            "docs/configuration.md gives {key} the default {written}, the binary has {value}"
        );
    }
}

/// The package's conffile: the embedded defaults, every key commented out, under a header.
fn commented_defaults() -> String {
    let mut out = String::from(
        "# /etc/vmwarden/vmwarden.toml, installed by the vmwarden package (a conffile: your changes are\n\
         # kept on upgrades). Every key is commented out and shows the default built into the binary;\n\
         # uncomment and change what this node needs. Reference: /usr/share/doc/vmwarden/configuration.md.\n\
         # (Generated from config/vmwarden.toml: UPDATE_GOLDEN=1 cargo test --test config_reference.)\n\
         #\n",
    );
    for line in DEFAULT_TOML.lines() {
        let t = line.trim_start();
        if !t.is_empty() && !t.starts_with('#') && !t.starts_with('[') {
            out.push_str("# ");
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[test]
fn package_conffile_is_the_commented_defaults() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/debian/vmwarden.toml");
    let want = commented_defaults();
    if std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1") {
        std::fs::write(path, &want).unwrap();
    }
    let have = std::fs::read_to_string(path).expect("debian/vmwarden.toml");
    assert!(
        have == want,
        "debian/vmwarden.toml is not config/vmwarden.toml with every key commented out (UPDATE_GOLDEN=1 cargo test --test config_reference rewrites it)"
    );
    // Loaded as the agent loads it, it is exactly the defaults: nothing pinned by the package.
    let cfg = Config::from_toml_str(&have, path).expect("the conffile loads");
    assert_eq!(cfg, Config::default_config().unwrap());
    assert!(
        have.lines()
            .filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
            .all(|l| l.starts_with('[')),
        "only section headers are active"
    );
}
