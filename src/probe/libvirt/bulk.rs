//! `virConnectGetAllDomainStats`: the stats of every domain in one round trip to libvirtd. The
//! only `unsafe` code of the libvirt probe lives here, because `virt` 0.5 exposes this call only
//! as raw record pointers that it never frees and whose typed parameters it does not decode.
//!
//! What this module guarantees: the record list is freed exactly once, on every path
//! (`virDomainStatsRecordListFree`, which also drops the list's domain references and frees
//! the parameters); every parameter is copied into owned Rust values before that; each record's
//! domain is handed out as a `virt::domain::Domain` holding its own reference (so it outlives
//! the list). Checked under valgrind (`docs/benchmarks.md` § libvirt round trips) and exercised by
//! `tests/libvirt_real.rs` and `tests/libvirt_testdriver.rs`.

use std::ffi::CStr;
use std::os::raw::c_char;

use virt::connect::Connect;
use virt::domain::Domain;
use virt::error::Error as VirtError;
use virt::sys;

/// A typed parameter's value, as libvirt typed it.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Int(i64),
    UInt(u64),
    Double(f64),
    Bool(bool),
    Str(String),
}

impl Value {
    /// An integer-typed value as u64; None for negative, fractional or non-numeric values.
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Value::Int(i) => u64::try_from(*i).ok(),
            Value::UInt(u) => Some(*u),
            _ => None,
        }
    }

    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            Value::UInt(u) => i64::try_from(*u).ok(),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
}

/// One domain's record: its handle and its parameters (`state.state`, `block.0.rd.bytes`, ...).
pub struct Record {
    pub domain: Domain,
    pub params: Vec<(String, Value)>,
}

impl Record {
    pub fn get(&self, field: &str) -> Option<&Value> {
        self.params.iter().find(|(k, _)| k == field).map(|(_, v)| v)
    }
}

/// Frees the list on every path out of `all_domain_stats`.
struct RecordList(*mut sys::virDomainStatsRecordPtr);

impl Drop for RecordList {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: the pointer came from virConnectGetAllDomainStats and is freed only here.
            unsafe { sys::virDomainStatsRecordListFree(self.0) }
        }
    }
}

/// `virConnectGetAllDomainStats(conn, stats, flags)`: `stats` is a mask of
/// `VIR_DOMAIN_STATS_*` groups, `flags` of `VIR_CONNECT_GET_ALL_DOMAINS_STATS_*` filters (0: all
/// domains, active and inactive).
pub fn all_domain_stats(conn: &Connect, stats: u32, flags: u32) -> Result<Vec<Record>, VirtError> {
    let mut raw: *mut sys::virDomainStatsRecordPtr = std::ptr::null_mut();
    // SAFETY: conn is a live connection for the duration of the call; raw receives a
    // NULL-terminated array owned by us from here on (RecordList frees it).
    let n = unsafe { sys::virConnectGetAllDomainStats(conn.as_ptr(), stats, &mut raw, flags) };
    let list = RecordList(raw);
    if n < 0 {
        return Err(VirtError::last_error());
    }
    let mut out = Vec::with_capacity(n as usize);
    for i in 0..n as usize {
        // SAFETY: libvirt returned n valid record pointers in the array (plus a NULL after them).
        let rec = unsafe { *list.0.add(i) };
        if rec.is_null() {
            break;
        }
        // SAFETY: rec points to a record that lives until the list is freed.
        let (dom, params, nparams) = unsafe { ((*rec).dom, (*rec).params, (*rec).nparams) };
        if dom.is_null() {
            continue;
        }
        // The list's own reference goes with the list; take one for the Domain we hand out.
        // SAFETY: dom is a valid domain object held by the record.
        if unsafe { sys::virDomainRef(dom) } < 0 {
            return Err(VirtError::last_error());
        }
        // SAFETY: we own the reference just taken; Domain's Drop releases it.
        let domain = unsafe { Domain::from_ptr(dom) };
        let count = usize::try_from(nparams).unwrap_or(0);
        let mut values = Vec::with_capacity(count);
        for j in 0..count {
            // SAFETY: params holds nparams initialised typed parameters.
            let p = unsafe { &*params.add(j) };
            if let Some(kv) = decode(p) {
                values.push(kv);
            }
        }
        out.push(Record {
            domain,
            params: values,
        });
    }
    drop(list);
    Ok(out)
}

/// Copy one typed parameter out; None for a type this build does not know.
fn decode(p: &sys::virTypedParameter) -> Option<(String, Value)> {
    let name = field_name(&p.field);
    // SAFETY (each arm): `type_` says which union member libvirt wrote.
    let v = unsafe {
        match p.type_ as u32 {
            sys::VIR_TYPED_PARAM_INT => Value::Int(i64::from(p.value.i)),
            sys::VIR_TYPED_PARAM_UINT => Value::UInt(u64::from(p.value.ui)),
            sys::VIR_TYPED_PARAM_LLONG => Value::Int(p.value.l),
            sys::VIR_TYPED_PARAM_ULLONG => Value::UInt(p.value.ul),
            sys::VIR_TYPED_PARAM_DOUBLE => Value::Double(p.value.d),
            sys::VIR_TYPED_PARAM_BOOLEAN => Value::Bool(p.value.b != 0),
            sys::VIR_TYPED_PARAM_STRING => {
                let s = p.value.s;
                if s.is_null() {
                    Value::Str(String::new())
                } else {
                    Value::Str(CStr::from_ptr(s).to_string_lossy().into_owned())
                }
            }
            _ => return None,
        }
    };
    Some((name, v))
}

/// The field name: NUL-terminated within its fixed array (never read past it, even if a
/// misbehaving server filled all 80 bytes).
fn field_name(field: &[c_char]) -> String {
    let bytes: Vec<u8> = field
        .iter()
        .take_while(|c| **c != 0)
        .map(|c| *c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn param(
        name: &str,
        ty: u32,
        set: impl FnOnce(&mut sys::virTypedParameter),
    ) -> sys::virTypedParameter {
        // SAFETY: an all-zero typed parameter is a valid (empty name, int 0) value.
        let mut p: sys::virTypedParameter = unsafe { std::mem::zeroed() };
        for (i, b) in name.bytes().enumerate() {
            p.field[i] = b as c_char;
        }
        p.type_ = ty as i32;
        set(&mut p);
        p
    }

    #[test]
    fn decodes_every_type() {
        let s = std::ffi::CString::new("vnet0").unwrap();
        let cases = [
            (
                param("a", sys::VIR_TYPED_PARAM_INT, |p| p.value.i = -3),
                Value::Int(-3),
            ),
            (
                param("b", sys::VIR_TYPED_PARAM_UINT, |p| p.value.ui = 7),
                Value::UInt(7),
            ),
            (
                param("c", sys::VIR_TYPED_PARAM_LLONG, |p| p.value.l = -1 << 40),
                Value::Int(-1 << 40),
            ),
            (
                param("d", sys::VIR_TYPED_PARAM_ULLONG, |p| p.value.ul = u64::MAX),
                Value::UInt(u64::MAX),
            ),
            (
                param("e", sys::VIR_TYPED_PARAM_DOUBLE, |p| p.value.d = 0.5),
                Value::Double(0.5),
            ),
            (
                param("f", sys::VIR_TYPED_PARAM_BOOLEAN, |p| p.value.b = 1),
                Value::Bool(true),
            ),
            (
                param("net.0.name", sys::VIR_TYPED_PARAM_STRING, |p| {
                    p.value.s = s.as_ptr() as *mut c_char
                }),
                Value::Str("vnet0".into()),
            ),
            (
                param("g", sys::VIR_TYPED_PARAM_STRING, |p| {
                    p.value.s = std::ptr::null_mut()
                }),
                Value::Str(String::new()),
            ),
        ];
        for (p, want) in cases {
            let (_, v) = decode(&p).unwrap();
            assert_eq!(v, want);
        }
        assert_eq!(
            decode(&param("x", 99, |_| {})),
            None,
            "unknown type is skipped"
        );
        assert_eq!(Value::Int(-1).as_u64(), None, "negative is not a counter");
        assert_eq!(Value::UInt(5).as_u64(), Some(5));
    }

    #[test]
    fn field_names_stop_at_nul_or_the_array_end() {
        let p = param("block.0.rd.bytes", sys::VIR_TYPED_PARAM_ULLONG, |_| {});
        assert_eq!(field_name(&p.field), "block.0.rd.bytes");
        let full = [b'x' as c_char; 80];
        assert_eq!(field_name(&full).len(), 80);
    }
}
