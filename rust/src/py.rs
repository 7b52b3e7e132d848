//! The PyO3 layer: thin wrappers that convert arguments, call the core and convert results.
//!
//! Every call takes or returns a whole batch (many endpoints, many label sets, a whole page
//! of keys), so Python crosses the boundary once per operation, never once per label.

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyMapping, PyString, PyTuple};

use crate::error::selector_error;
use std::sync::Arc;

use crate::index::{
    CatchUp, EndpointChange, EndpointEntry, EndpointIndex, EndpointValue, Event, Filter, GroupId,
    Key, LabelSet, ProfileChange, ProfileList, Replay, StoredEndpoint, StoredEndpointChange,
    StoredError, StoredProfileChange,
};
use crate::model::messages::Timestamp;
use crate::model::stored::{self, Identity, Item, Outcome};
use crate::selector::Selector;

/// A label set as `Selector` reads it: key to value.
type LabelMap = foldhash::HashMap<String, String>;

/// An event as Python sees it: `(namespace, name, revision, event_type)`.
fn event_tuple<'py>(py: Python<'py>, event: &Event) -> PyResult<Bound<'py, PyTuple>> {
    (
        &*event.key.0,
        &*event.key.1,
        event.revision,
        event.kind as u8,
    )
        .into_pyobject(py)
}

/// A list of `(namespace, name)` tuples.
fn key_list<'py, 'a>(
    py: Python<'py>,
    keys: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> PyResult<Bound<'py, PyList>> {
    PyList::new(py, keys)
}

/// `(revision, namespace, name, node, own_labels, profiles)` as `apply` receives it.
type EndpointChangeTuple<'a, 'py> = (
    u64,
    &'a str,
    String,
    Option<&'a str>,
    Option<Bound<'py, PyAny>>,
    Option<Vec<Bound<'py, PyString>>>,
);

/// `diff`'s result as Python receives it: `(added, modified, deleted)`, each a list of
/// `(namespace, name)` tuples.
type DiffLists<'py> = (Bound<'py, PyList>, Bound<'py, PyList>, Bound<'py, PyList>);

fn key_parts(key: &Key) -> (&str, &str) {
    (&key.0, &key.1)
}

/// Converts a `Mapping[str, str]` (a `dict` on the fast path) into a label map.
fn extract_labels(labels: &Bound<'_, PyAny>) -> PyResult<LabelMap> {
    if let Ok(dict) = labels.cast::<PyDict>() {
        let mut map =
            LabelMap::with_capacity_and_hasher(dict.len(), foldhash::fast::RandomState::default());
        for (key, value) in dict.iter() {
            map.insert(key.extract()?, value.extract()?);
        }
        return Ok(map);
    }
    let items = labels.cast::<PyMapping>()?.items()?;
    let mut map =
        LabelMap::with_capacity_and_hasher(items.len(), foldhash::fast::RandomState::default());
    for item in items.iter() {
        let (key, value): (String, String) = item.extract()?;
        map.insert(key, value);
    }
    Ok(map)
}

/// Converts a `Mapping[str, str]` (a `dict` on the fast path) into a label set of the
/// index's shared labels, reading the Python strings in place: a batch of endpoints is
/// converted before it is applied, and copies would make it take the memory twice.
fn intern_labels(index: &mut EndpointIndex, mapping: &Bound<'_, PyAny>) -> PyResult<LabelSet> {
    let mut labels = Vec::new();
    if let Ok(dict) = mapping.cast::<PyDict>() {
        labels.reserve_exact(dict.len());
        for (key, value) in dict.iter() {
            labels.push(index.label(key.extract()?, value.extract()?));
        }
    } else {
        for item in mapping.cast::<PyMapping>()?.items()?.iter() {
            let (key, value): (&str, &str) = item.extract()?;
            labels.push(index.label(key, value));
        }
    }
    Ok(labels.into_iter().collect())
}

/// The index's shared list of these profile names.
fn intern_profiles(
    index: &mut EndpointIndex,
    names: &[Bound<'_, PyString>],
) -> PyResult<ProfileList> {
    let mut list = Vec::with_capacity(names.len());
    for name in names {
        list.push(index.intern(name.to_str()?));
    }
    Ok(index.profile_list(&list))
}

/// `(revision, namespace, name, value, previous, previous_resource_version)` as
/// `apply_stored` receives it.
type StoredChangeTuple<'py> = (
    u64,
    Bound<'py, PyString>,
    Bound<'py, PyString>,
    Option<Bound<'py, PyBytes>>,
    Option<Bound<'py, PyBytes>>,
    u64,
);

/// `(revision, name, value)` as `apply_stored` receives it.
type StoredProfileTuple<'py> = (u64, Bound<'py, PyString>, Option<Bound<'py, PyBytes>>);

/// Every endpoint's stored bytes and resource version, by namespace and name: the very
/// bytes objects the caller passed (the cache's own), not copies. The index keeps no bytes;
/// `apply_stored` needs the current state of endpoints a batch does not change, for the
/// events a profile change gives them.
#[derive(Default)]
struct StoredStates(foldhash::HashMap<Arc<str>, NamespaceStates>);

/// One namespace's endpoints: name -> (stored bytes, resource version).
type NamespaceStates = foldhash::HashMap<Box<str>, (Py<PyBytes>, u64)>;

impl StoredStates {
    fn get<'a>(&'a self, py: Python<'_>, namespace: &str, name: &str) -> Option<(&'a [u8], u64)> {
        let (stored, version) = self.0.get(namespace)?.get(name)?;
        Some((stored.as_bytes(py), *version))
    }

    fn set(&mut self, namespace: &str, name: &str, stored: &Bound<'_, PyBytes>, version: u64) {
        let names = match self.0.get_mut(namespace) {
            Some(names) => names,
            None => self.0.entry(Arc::from(namespace)).or_default(),
        };
        names.insert(Box::from(name), (stored.clone().unbind(), version));
    }

    /// Forgets an endpoint: it was removed, or written without its bytes.
    fn forget(&mut self, namespace: &str, name: &str) {
        if let Some(names) = self.0.get_mut(namespace) {
            names.remove(name);
            if names.is_empty() {
                self.0.remove(namespace);
            }
        }
    }
}

/// The ADDED catch-up entries of the snapshot at one revision, by key: encoded once for
/// every watcher that starts at that revision (a reconnect storm, SPEC §6.7), and dropped
/// when a call comes with another revision or the endpoints change, so they do not outlive
/// the storm.
#[derive(Default)]
struct AddedEntries {
    revision: u64,
    entries: foldhash::HashMap<Key, Py<PyBytes>>,
}

impl AddedEntries {
    fn clear(&mut self) {
        self.entries = foldhash::HashMap::default();
    }
}

/// Encodes `events` at `revision`, reusing and keeping the ADDED entries of that revision;
/// returns the entries in order and how many of them were encoded by this call.
fn catch_up_entries<'py>(
    py: Python<'py>,
    states: &StoredStates,
    added: &mut AddedEntries,
    events: &[CatchUp<'_, '_>],
    revision: u64,
) -> PyResult<(Bound<'py, PyList>, usize)> {
    if added.revision != revision {
        added.clear();
        added.revision = revision;
    }
    let current = |namespace: &str, name: &str| states.get(py, namespace, name);
    let list = PyList::empty(py);
    let mut encoded = 0;
    for event in events {
        if let CatchUp::Added(key) = event {
            if let Some(entry) = added.entries.get(*key) {
                list.append(entry.bind(py))?;
                continue;
            }
            let entry = PyBytes::new(py, &event.encode(revision, current)?);
            list.append(&entry)?;
            added.entries.insert((*key).clone(), entry.unbind());
        } else {
            list.append(PyBytes::new(py, &event.encode(revision, current)?))?;
        }
        encoded += 1;
    }
    Ok((list, encoded))
}

/// A watch request's known versions as the server read them from its bytes
/// ([`crate::known::split_known_versions`]): `"namespace/name"` -> resource version, in the
/// order the client sent them. The keys stay in the request's bytes, which this holds; the
/// index's diff reads them there.
#[pyclass(module = "epsync._core", name = "KnownVersions", frozen)]
pub struct PyKnownVersions {
    raw: Py<PyBytes>,
    entries: Vec<(std::ops::Range<usize>, i64)>,
}

impl PyKnownVersions {
    /// `(key, version)` pairs over `raw` (this object's bytes).
    fn keys<'a>(&'a self, raw: &'a [u8]) -> impl Iterator<Item = (&'a str, i64)> + 'a {
        self.entries.iter().map(move |(range, version)| {
            // The split checked every key's UTF-8.
            let key = std::str::from_utf8(&raw[range.clone()]).unwrap_or_default();
            (key, *version)
        })
    }

    /// `(key, version)` pairs for the index, refusing a negative version (the server checks
    /// them first; this keeps the conversion honest).
    fn pairs<'a>(&'a self, raw: &'a [u8]) -> PyResult<Vec<(&'a str, u64)>> {
        self.keys(raw)
            .map(|(key, version)| {
                u64::try_from(version).map(|v| (key, v)).map_err(|_| {
                    pyo3::exceptions::PyValueError::new_err(format!(
                        "negative known version of {key:?}"
                    ))
                })
            })
            .collect()
    }
}

#[pymethods]
impl PyKnownVersions {
    fn __len__(&self) -> usize {
        self.entries.len()
    }

    /// `(key, version)` pairs, in the order the client sent them.
    fn items<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let bytes = self.raw.bind(py);
        PyList::new(py, self.keys(bytes.as_bytes()))
    }

    /// The keys whose version is negative: at most `limit` of them, sorted, and how many there are.
    fn negative(&self, py: Python<'_>, limit: usize) -> (Vec<String>, usize) {
        let bytes = self.raw.bind(py);
        let mut keys: Vec<&str> = self
            .keys(bytes.as_bytes())
            .filter(|(_, version)| *version < 0)
            .map(|(key, _)| key)
            .collect();
        let count = keys.len();
        keys.sort_unstable();
        keys.truncate(limit);
        (keys.into_iter().map(str::to_owned).collect(), count)
    }
}

/// Below this many bytes a request is split without releasing the GIL (see `DETACH_MIN_ITEMS`).
const DETACH_MIN_BYTES: usize = 64 * 1024;

/// Splits an encoded watch request into its other fields' bytes and its known versions (the
/// `map<string, int64>` of field number `field`), reading the map without the GIL.
///
/// # Errors
///
/// `ValueError` naming the problem when the bytes are not well-formed.
#[pyfunction]
pub fn split_known_versions<'py>(
    py: Python<'py>,
    raw: &Bound<'py, PyBytes>,
    field: u32,
) -> PyResult<(Bound<'py, PyBytes>, PyKnownVersions)> {
    let bytes = raw.as_bytes();
    let split = if bytes.len() >= DETACH_MIN_BYTES {
        py.detach(|| crate::known::split_known_versions(bytes, field))
    } else {
        crate::known::split_known_versions(bytes, field)
    }
    .map_err(|error| pyo3::exceptions::PyValueError::new_err(error.0))?;
    let known = PyKnownVersions {
        raw: raw.clone().unbind(),
        entries: split.known,
    };
    Ok((PyBytes::new(py, &split.rest), known))
}

/// Calls `f` with a client's known versions as `(key, version)` pairs: read in place from a
/// [`PyKnownVersions`], or converted from any mapping of `"namespace/name"` -> resource version.
fn with_known_pairs<'py, T>(
    py: Python<'py>,
    known: &Bound<'py, PyAny>,
    f: impl FnOnce(&[(&str, u64)]) -> PyResult<T>,
) -> PyResult<T> {
    if let Ok(parsed) = known.cast::<PyKnownVersions>() {
        let read = parsed.get();
        let bytes = read.raw.bind(py);
        return f(&read.pairs(bytes.as_bytes())?);
    }
    let owned = known_versions(known)?;
    let pairs = owned
        .iter()
        .map(|(key, version)| Ok((key.to_str()?, *version)))
        .collect::<PyResult<Vec<_>>>()?;
    f(&pairs)
}

/// A client's known versions, `"namespace/name"` -> resource version, as `(key, version)`
/// pairs of the caller's own strings.
fn known_versions<'py>(known: &Bound<'py, PyAny>) -> PyResult<Vec<(Bound<'py, PyString>, u64)>> {
    let mut owned: Vec<(Bound<'py, PyString>, u64)> = Vec::new();
    if let Ok(dict) = known.cast::<PyDict>() {
        owned.reserve(dict.len());
        for (key, version) in dict.iter() {
            owned.push((key.cast_into::<PyString>()?, version.extract()?));
        }
    } else {
        for item in known.cast::<PyMapping>()?.items()?.iter() {
            let (key, version): (Bound<'py, PyString>, u64) = item.extract()?;
            owned.push((key, version));
        }
    }
    Ok(owned)
}

/// A parsed Calico label selector.
///
/// `Selector(text)` parses `text` (raising `SelectorError` with the position of the
/// problem); `str(selector)` is its canonical form, which parses back to an equal
/// selector. Selectors compare and hash by canonical form.
#[pyclass(module = "epsync._core", name = "Selector", frozen, eq, hash)]
#[derive(PartialEq, Hash)]
pub struct PySelector {
    inner: Selector,
}

#[pymethods]
impl PySelector {
    #[new]
    fn new(text: &Bound<'_, PyString>) -> PyResult<Self> {
        match Selector::parse(text.to_str()?) {
            Ok(inner) => Ok(PySelector { inner }),
            // The error keeps the caller's string object rather than a copy of it.
            Err(error) => Err(selector_error(error, text)),
        }
    }

    /// Whether the labels satisfy the selector.
    fn matches(&self, labels: &Bound<'_, PyAny>) -> PyResult<bool> {
        Ok(self.inner.matches(&extract_labels(labels)?))
    }

    /// The indices, ascending, of the label sets that satisfy the selector.
    fn select(&self, label_sets: &Bound<'_, PyAny>) -> PyResult<Vec<usize>> {
        let mut selected = Vec::new();
        for (i, labels) in label_sets.try_iter()?.enumerate() {
            if self.inner.matches(&extract_labels(&labels?)?) {
                selected.push(i);
            }
        }
        Ok(selected)
    }

    /// True when the selector matches everything: `all()`, `global()` or empty.
    #[getter]
    fn is_all(&self) -> bool {
        self.inner.is_all()
    }

    fn __str__(&self) -> &str {
        self.inner.canonical()
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let text = PyString::new(py, self.inner.canonical()).repr()?;
        Ok(format!("Selector({text})"))
    }
}

/// Endpoints' namespace, node, own labels and profiles; profiles' labelsToApply; answers
/// filtered, ordered queries.
///
/// An endpoint's effective labels are its own labels plus, for each key it lacks, the value
/// from the first of its profiles (in order) that has the key. Profiles not in the index
/// contribute nothing. Keys are `(namespace, name)` tuples, ordered as tuples.
#[pyclass(module = "epsync._core", name = "EndpointIndex")]
pub struct PyEndpointIndex {
    inner: EndpointIndex,
    /// What `load_stored` and `apply_stored` were given; every other write forgets the
    /// endpoints it writes.
    stored: StoredStates,
    /// The ADDED entries `initial_entries` and `difference_entries` encoded at the last
    /// revision they were given; every write of endpoints drops them.
    added: AddedEntries,
}

/// The selector a query was given, if any.
fn selector_of<'a>(selector: Option<&'a Bound<'_, PySelector>>) -> Option<&'a Selector> {
    selector.map(|selector| &selector.get().inner)
}

#[pymethods]
impl PyEndpointIndex {
    #[new]
    fn new() -> Self {
        PyEndpointIndex {
            inner: EndpointIndex::new(),
            stored: StoredStates::default(),
            added: AddedEntries::default(),
        }
    }

    /// Inserts `(namespace, name, node, own_labels, profile_names, resource_version)`
    /// entries, each replacing any previous entry for `(namespace, name)`. For loading a
    /// snapshot: nothing is logged or planned. The batch is converted before any of it is
    /// applied, so a bad entry changes nothing.
    fn upsert_endpoints(&mut self, endpoints: &Bound<'_, PyAny>) -> PyResult<()> {
        self.added.clear();
        let mut entries = Vec::new();
        for item in endpoints.try_iter()? {
            let item = item?;
            let (namespace, name, node, labels, profiles, resource_version): (
                &str,
                String,
                &str,
                Bound<'_, PyAny>,
                Vec<Bound<'_, PyString>>,
                u64,
            ) = item.extract()?;
            self.stored.forget(namespace, &name);
            let index = &mut self.inner;
            entries.push(EndpointEntry {
                namespace: index.intern(namespace),
                name,
                node: index.intern(node),
                labels: intern_labels(index, &labels)?,
                profiles: intern_profiles(index, &profiles)?,
                resource_version,
            });
        }
        self.inner.upsert_endpoints(entries);
        Ok(())
    }

    /// Removes endpoints by `(namespace, name)`; missing keys are ignored.
    #[expect(
        clippy::needless_pass_by_value,
        reason = "PyO3 extracts a list argument only into an owned Vec, not a slice"
    )]
    fn remove_endpoints(&mut self, keys: Vec<(String, String)>) {
        self.added.clear();
        for (namespace, name) in &keys {
            self.stored.forget(namespace, name);
        }
        self.inner.remove_endpoints(
            keys.iter()
                .map(|(namespace, name)| (namespace.as_str(), name.as_str())),
        );
    }

    /// Inserts or replaces `(name, labels_to_apply)` profiles and re-evaluates the effective
    /// labels of the endpoints that name them.
    fn upsert_profiles(&mut self, profiles: &Bound<'_, PyAny>) -> PyResult<()> {
        let mut entries = Vec::new();
        for item in profiles.try_iter()? {
            let (name, labels): (String, Bound<'_, PyAny>) = item?.extract()?;
            entries.push((name, intern_labels(&mut self.inner, &labels)?));
        }
        self.inner.upsert_profiles(entries);
        Ok(())
    }

    /// Removes profiles by name (missing names are ignored) and re-evaluates the effective
    /// labels of the endpoints that name them.
    #[expect(
        clippy::needless_pass_by_value,
        reason = "PyO3 extracts a list argument only into an owned Vec, not a slice"
    )]
    fn remove_profiles(&mut self, names: Vec<String>) {
        self.inner.remove_profiles(names.iter().map(String::as_str));
    }

    /// Keys `(namespace, name)` in ascending tuple order, strictly after `after`, restricted
    /// to `namespace` and `node` when they are non-empty, matching `selector` (on effective
    /// labels) when it is given; at most `limit` of them (0 means no limit).
    #[pyo3(signature = (namespace, node, selector, after, limit))]
    fn query<'py>(
        &self,
        py: Python<'py>,
        namespace: &str,
        node: &str,
        selector: Option<&Bound<'_, PySelector>>,
        after: Option<(&str, &str)>,
        limit: usize,
    ) -> PyResult<Bound<'py, PyList>> {
        let filter = Filter {
            namespace,
            node,
            selector: selector_of(selector),
        };
        let keys = self.inner.query(filter, after, limit);
        PyList::new(py, keys.into_iter().map(key_parts))
    }

    /// How many endpoints a `query` with the same filters and no paging would return.
    #[pyo3(signature = (namespace, node, selector))]
    fn count(
        &self,
        namespace: &str,
        node: &str,
        selector: Option<&Bound<'_, PySelector>>,
    ) -> usize {
        self.inner.count(Filter {
            namespace,
            node,
            selector: selector_of(selector),
        })
    }

    /// The endpoint's effective labels, or None if it is not in the index.
    fn effective_labels<'py>(
        &self,
        py: Python<'py>,
        namespace: &str,
        name: &str,
    ) -> PyResult<Option<Bound<'py, PyDict>>> {
        self.inner
            .effective_labels(namespace, name)
            .map(|labels| {
                let dict = PyDict::new(py);
                for (key, value) in labels.iter() {
                    dict.set_item(key, value)?;
                }
                Ok(dict)
            })
            .transpose()
    }

    /// The endpoint's resource version (the revision of its last change), or None if it is
    /// not in the index.
    fn resource_version(&self, namespace: &str, name: &str) -> Option<u64> {
        self.inner.resource_version(namespace, name)
    }

    fn __len__(&self) -> usize {
        self.inner.len()
    }

    /// Registers a watcher filter (namespace "" = any, node "" = any, selector None = any)
    /// and returns its group id. An identical filter (same namespace, node and canonical
    /// selector; a selector that `is_all` counts as None) returns the same id and takes
    /// another reference to it.
    #[pyo3(signature = (namespace, node, selector))]
    fn add_group(
        &mut self,
        namespace: &str,
        node: &str,
        selector: Option<&Bound<'_, PySelector>>,
    ) -> GroupId {
        self.inner.add_group(namespace, node, selector_of(selector))
    }

    /// Drops one reference to a group; the last one removes it. Its id is never reused.
    /// Raises `KeyError` for an unknown id.
    fn release_group(&mut self, group: GroupId) -> PyResult<()> {
        Ok(self.inner.release_group(group)?)
    }

    /// How many distinct groups exist.
    #[getter]
    fn group_count(&self) -> usize {
        self.inner.group_count()
    }

    /// The last revision applied by `apply` or set by `reset_log` (0 at first); `apply`
    /// only accepts later revisions.
    #[getter]
    fn revision(&self) -> u64 {
        self.inner.revision()
    }

    /// The oldest revision R a replay can start after: every change after R is logged.
    #[getter]
    fn log_start(&self) -> u64 {
        self.inner.log_start()
    }

    /// How many endpoint transitions the log holds.
    #[getter]
    fn log_size(&self) -> usize {
        self.inner.log_len()
    }

    /// Empties the log and sets `log_start` and `revision` to `revision`: the index now
    /// holds the state at that revision (call it after loading a snapshot).
    fn reset_log(&mut self, revision: u64) {
        self.inner.reset_log(revision);
    }

    /// Drops logged transitions of revisions up to `up_to_revision` and raises `log_start`
    /// to it.
    fn trim_log(&mut self, up_to_revision: u64) {
        self.inner.trim_log(up_to_revision);
    }

    /// Applies a batch of committed changes and plans their watch events.
    ///
    /// `endpoint_changes`: `(revision, namespace, name, node, own_labels, profiles)`, node
    /// None for a delete. `profile_changes`: `(revision, name, labels_to_apply)`, labels
    /// None for a delete. Each list in ascending revision order, every revision after
    /// `revision` (else `ValueError`, and nothing is applied).
    ///
    /// Returns `(subjects, deliveries)`: subjects are distinct `(namespace, name, revision,
    /// event_type)` events (1 ADDED, 2 MODIFIED, 3 DELETED) in ascending revision order;
    /// deliveries are `(group, indices into subjects)` for every group with an event.
    fn apply<'py>(
        &mut self,
        py: Python<'py>,
        endpoint_changes: &Bound<'py, PyAny>,
        profile_changes: &Bound<'py, PyAny>,
    ) -> PyResult<(Bound<'py, PyList>, Bound<'py, PyList>)> {
        self.added.clear();
        let mut endpoints = Vec::new();
        // The keys written without their bytes, forgotten once the batch is applied.
        let mut plan_keys: Vec<(String, String)> = Vec::new();
        for item in endpoint_changes.try_iter()? {
            let item = item?;
            let (revision, namespace, name, node, labels, profiles): EndpointChangeTuple<'_, '_> =
                item.extract()?;
            let index = &mut self.inner;
            let value = match node {
                None => None,
                Some(node) => Some(EndpointValue {
                    node: index.intern(node),
                    labels: match &labels {
                        Some(labels) => intern_labels(index, labels)?,
                        None => LabelSet::default(),
                    },
                    profiles: intern_profiles(index, &profiles.unwrap_or_default())?,
                }),
            };
            plan_keys.push((namespace.to_owned(), name.clone()));
            endpoints.push(EndpointChange {
                revision,
                namespace: index.intern(namespace),
                name,
                value,
            });
        }
        let mut profiles = Vec::new();
        for item in profile_changes.try_iter()? {
            let (revision, name, labels): (u64, String, Option<Bound<'_, PyAny>>) =
                item?.extract()?;
            profiles.push(ProfileChange {
                revision,
                name,
                labels: labels
                    .map(|labels| intern_labels(&mut self.inner, &labels))
                    .transpose()?,
            });
        }
        let plan = self.inner.apply(endpoints, profiles)?;
        for change in &plan_keys {
            self.stored.forget(&change.0, &change.1);
        }
        let subjects = PyList::empty(py);
        for event in &plan.subjects {
            subjects.append(event_tuple(py, event)?)?;
        }
        let deliveries = PyList::empty(py);
        for (group, indices) in plan.deliveries() {
            deliveries.append((group, PyList::new(py, indices)?))?;
        }
        Ok((subjects, deliveries))
    }

    /// Inserts a snapshot as stored: `profiles` as `(name, stored bytes)`, then `endpoints`
    /// as `(namespace, name, resource_version, stored bytes)`, each replacing any previous
    /// entry with its key; the index reads what it needs from the bytes and keeps the bytes
    /// objects themselves (no copies) for `apply_stored`. Nothing is logged or planned.
    /// `ValueError` when a value does not decode, and nothing is inserted.
    fn load_stored(
        &mut self,
        endpoints: &Bound<'_, PyAny>,
        profiles: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        self.added.clear();
        let mut owned_endpoints = Vec::new();
        for item in endpoints.try_iter()? {
            let item: (
                Bound<'_, PyString>,
                Bound<'_, PyString>,
                u64,
                Bound<'_, PyBytes>,
            ) = item?.extract()?;
            owned_endpoints.push(item);
        }
        let mut owned_profiles = Vec::new();
        for item in profiles.try_iter()? {
            let item: (Bound<'_, PyString>, Bound<'_, PyBytes>) = item?.extract()?;
            owned_profiles.push(item);
        }
        let mut batch = Vec::with_capacity(owned_endpoints.len());
        for (namespace, name, resource_version, stored) in &owned_endpoints {
            batch.push(StoredEndpoint {
                namespace: namespace.to_str()?,
                name: name.to_str()?,
                resource_version: *resource_version,
                stored: stored.as_bytes(),
            });
        }
        let mut profile_batch = Vec::with_capacity(owned_profiles.len());
        for (name, stored) in &owned_profiles {
            profile_batch.push((name.to_str()?, stored.as_bytes()));
        }
        self.inner.load_stored(&batch, &profile_batch)?;
        for (endpoint, (_, _, _, stored)) in batch.iter().zip(&owned_endpoints) {
            self.stored.set(
                endpoint.namespace,
                endpoint.name,
                stored,
                endpoint.resource_version,
            );
        }
        Ok(())
    }

    /// Applies a batch of committed changes as stored, as `apply` does, and returns its
    /// events ready to send.
    ///
    /// `endpoint_changes`: `(revision, namespace, name, value, previous,
    /// previous_resource_version)`: the stored bytes after the change (None for a delete)
    /// and before it (None when the endpoint did not exist) with the resource version of
    /// the latter. `profile_changes`: `(revision, name, value)`, value None for a delete.
    /// Each list in ascending revision order, every revision after `revision`; else, or
    /// when a value does not decode, `ValueError` and nothing is applied.
    ///
    /// Returns `(deliveries, event_count)`: for every group with events (ascending ids),
    /// `(group, [(revision, [entry, ...]), ...])`, one chunk per revision in ascending
    /// order, each entry an encoded `events` entry of a watch response; each distinct event
    /// is one bytes object, shared by every group that gets it, and `event_count` says how
    /// many there are.
    fn apply_stored<'py>(
        &mut self,
        py: Python<'py>,
        endpoint_changes: &Bound<'py, PyAny>,
        profile_changes: &Bound<'py, PyAny>,
    ) -> PyResult<(Bound<'py, PyList>, usize)> {
        self.added.clear();
        let mut owned: Vec<StoredChangeTuple<'py>> = Vec::new();
        for item in endpoint_changes.try_iter()? {
            owned.push(item?.extract()?);
        }
        let mut owned_profiles: Vec<StoredProfileTuple<'py>> = Vec::new();
        for item in profile_changes.try_iter()? {
            owned_profiles.push(item?.extract()?);
        }
        let mut changes = Vec::with_capacity(owned.len());
        for (revision, namespace, name, value, previous, previous_version) in &owned {
            changes.push(StoredEndpointChange {
                revision: *revision,
                namespace: namespace.to_str()?,
                name: name.to_str()?,
                value: value.as_ref().map(PyBytesMethods::as_bytes),
                previous: previous.as_ref().map(PyBytesMethods::as_bytes),
                previous_version: *previous_version,
            });
        }
        let mut profiles = Vec::with_capacity(owned_profiles.len());
        for (revision, name, value) in &owned_profiles {
            profiles.push(StoredProfileChange {
                revision: *revision,
                name: name.to_str()?,
                value: value.as_ref().map(PyBytesMethods::as_bytes),
            });
        }
        let states = &self.stored;
        let result = self
            .inner
            .apply_stored(&changes, &profiles, |namespace, name| {
                states.get(py, namespace, name)
            });
        if matches!(result, Ok(_) | Err(StoredError::MissingState { .. })) {
            // Applied: the bytes follow the index.
            for (change, (_, _, _, value, _, _)) in changes.iter().zip(&owned) {
                match value {
                    Some(stored) => {
                        self.stored
                            .set(change.namespace, change.name, stored, change.revision);
                    }
                    None => self.stored.forget(change.namespace, change.name),
                }
            }
        }
        let encoded = result?;
        let entries: Vec<Bound<'py, PyBytes>> = encoded
            .entries
            .iter()
            .map(|entry| PyBytes::new(py, entry))
            .collect();
        let deliveries = PyList::empty(py);
        for (group, chunks) in encoded.chunks() {
            let list = PyList::empty(py);
            for (revision, indices) in chunks {
                let chunk = PyList::new(py, indices.iter().map(|&i| &entries[i as usize]))?;
                list.append((revision, chunk))?;
            }
            deliveries.append((group, list))?;
        }
        Ok((deliveries, entries.len()))
    }

    /// The events (as in `apply`'s subjects) `group` would have received live for every
    /// revision after `after_revision`, in revision order; None when `after_revision <
    /// log_start` or when there would be more than `limit` (0: no limit). `KeyError` for an
    /// unknown group.
    fn replay<'py>(
        &self,
        py: Python<'py>,
        group: GroupId,
        after_revision: u64,
        limit: usize,
    ) -> PyResult<Option<Bound<'py, PyList>>> {
        match self.inner.replay(group, after_revision, limit)? {
            Replay::Events(events) => {
                let list = PyList::empty(py);
                for event in &events {
                    list.append(event_tuple(py, event)?)?;
                }
                Ok(Some(list))
            }
            Replay::Expired | Replay::TooMany => Ok(None),
        }
    }

    /// `replay` over part of the log: about `max_visits` logged changes at most (0: all),
    /// whole revisions; `(events, the revision it got through, or None at the log's end)`, or
    /// None as `replay`.
    fn replay_part<'py>(
        &self,
        py: Python<'py>,
        group: GroupId,
        after_revision: u64,
        limit: usize,
        max_visits: usize,
    ) -> PyResult<Option<(Bound<'py, PyList>, Option<u64>)>> {
        match self
            .inner
            .replay_part(group, after_revision, limit, max_visits)?
        {
            (Replay::Events(events), through) => {
                let list = PyList::empty(py);
                for event in &events {
                    list.append(event_tuple(py, event)?)?;
                }
                Ok(Some((list, through)))
            }
            (Replay::Expired | Replay::TooMany, _) => Ok(None),
        }
    }

    /// `(added, modified, deleted)` keys between `known` ("namespace/name" -> resource
    /// version) and what `group` matches now: matching endpoints not known and matching
    /// endpoints whose version differs, each in key order, and known keys that do not exist or
    /// do not match, in `known`'s order (a key without '/' comes back as `("", key)`). `KeyError` for an unknown group.
    fn diff<'py>(
        &self,
        py: Python<'py>,
        group: GroupId,
        known: &Bound<'py, PyAny>,
    ) -> PyResult<DiffLists<'py>> {
        with_known_pairs(py, known, |pairs| {
            let diff = self.inner.diff(group, pairs)?;
            Ok((
                key_list(py, diff.added.into_iter().map(key_parts))?,
                key_list(py, diff.modified.into_iter().map(key_parts))?,
                key_list(py, diff.deleted)?,
            ))
        })
    }

    /// A new watcher's initial events at snapshot revision `revision` (SPEC §6.3): ADDED
    /// for every endpoint `group` matches now, in key order (as `query`), each the
    /// endpoint as stored now with its own resource version, stamped `revision`.
    ///
    /// Returns `(entries, encoded)`: encoded `events` entries of a watch response, and how
    /// many of them this call encoded. An ADDED entry is encoded once per revision: every
    /// call at the same revision (until the endpoints change) returns the same bytes
    /// object for the same key, whichever group it comes in. `KeyError` for an unknown
    /// group; `RuntimeError` for an endpoint whose bytes `load_stored`/`apply_stored` did
    /// not give.
    fn initial_entries<'py>(
        &mut self,
        py: Python<'py>,
        group: GroupId,
        revision: u64,
    ) -> PyResult<(Bound<'py, PyList>, usize)> {
        let events = self.inner.initial_events(group)?;
        catch_up_entries(py, &self.stored, &mut self.added, &events, revision)
    }

    /// The events that turn a client's `known` versions ("namespace/name" -> resource
    /// version) into `group`'s state at snapshot revision `revision` (SPEC §6.4), as
    /// `diff` finds them: ADDED for each key of `added`, then MODIFIED for each of
    /// `modified` (the endpoints as in `initial_entries`), then DELETED for each of
    /// `deleted`, an object with only `metadata {namespace, name, resource_version:
    /// revision}`; every event stamped `revision`. Returns, shares and raises as
    /// `initial_entries`.
    fn difference_entries<'py>(
        &mut self,
        py: Python<'py>,
        group: GroupId,
        known: &Bound<'py, PyAny>,
        revision: u64,
    ) -> PyResult<(Bound<'py, PyList>, usize)> {
        with_known_pairs(py, known, |pairs| {
            let events = self.inner.difference_events(group, pairs)?;
            catch_up_entries(py, &self.stored, &mut self.added, &events, revision)
        })
    }
}

// ---- validation and normalisation of writes ----

/// A batch item as Python passes it: `(encoded message, uid or None, (seconds, nanos) or
/// None)`, the identity to give it, or `(encoded message, stored bytes)`, the stored object
/// whose identity it keeps.
#[derive(FromPyObject)]
enum ItemTuple<'py> {
    Given(
        Bound<'py, PyBytes>,
        Option<Bound<'py, PyString>>,
        Option<(i64, i32)>,
    ),
    KeptFrom(Bound<'py, PyBytes>, Bound<'py, PyBytes>),
}

/// Below this many items a batch runs without releasing the GIL: its work takes a few
/// microseconds, and getting the GIL back while another thread holds it can take a whole
/// switch interval (5 ms).
const DETACH_MIN_ITEMS: usize = 32;

/// Converts a batch, runs `normalize` over it (without the GIL when the batch is large
/// enough: it reads only the bytes' and strings' buffers, which are immutable and kept alive
/// by `owned`) and converts the outcomes: stored bytes, or a list of `(field, description)`.
fn normalize_batch<'py>(
    py: Python<'py>,
    items: &Bound<'py, PyAny>,
    normalize: fn(&[Item<'_>]) -> Vec<Outcome>,
) -> PyResult<Bound<'py, PyList>> {
    let mut owned: Vec<ItemTuple<'py>> = Vec::new();
    for item in items.try_iter()? {
        owned.push(item?.extract()?);
    }
    let mut batch: Vec<Item<'_>> = Vec::with_capacity(owned.len());
    for item in &owned {
        batch.push(match item {
            ItemTuple::Given(bytes, uid, timestamp) => Item {
                bytes: bytes.as_bytes(),
                identity: Identity::Given {
                    uid: uid.as_ref().map(PyStringMethods::to_str).transpose()?,
                    creation_timestamp: timestamp
                        .map(|(seconds, nanos)| Timestamp { seconds, nanos }),
                },
            },
            ItemTuple::KeptFrom(bytes, stored) => Item {
                bytes: bytes.as_bytes(),
                identity: Identity::KeptFrom(stored.as_bytes()),
            },
        });
    }
    let outcomes = if batch.len() >= DETACH_MIN_ITEMS {
        py.detach(|| normalize(&batch))
    } else {
        normalize(&batch)
    };
    let list = PyList::empty(py);
    for outcome in outcomes {
        match outcome {
            Ok(bytes) => list.append(PyBytes::new(py, &bytes))?,
            Err(violations) => list.append(PyList::new(
                py,
                violations
                    .iter()
                    .map(|violation| (&violation.field, &violation.description)),
            )?)?,
        }
    }
    Ok(list)
}

/// Validates and normalises a batch of WorkloadEndpoints for storing, as
/// `epsync.model.validation.normalize_workload_endpoint` and `WORKLOAD_ENDPOINTS.encode` do.
///
/// Each item is `(encoded WorkloadEndpoint, uid to set or None, (seconds, nanos) creation
/// timestamp to set or None)` or `(encoded WorkloadEndpoint, stored bytes of the endpoint
/// whose uid and creation timestamp it keeps)`; each result, in order, is the stored bytes or the list of
/// `(field path, message)` violations.
#[pyfunction]
pub fn normalize_endpoints<'py>(
    py: Python<'py>,
    items: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyList>> {
    normalize_batch(py, items, stored::normalize_endpoints)
}

/// The indexes of the `values` (stored bytes, or None for a deletion) that do not decode as
/// `kind`'s message, "WorkloadEndpoint" or "Profile" (anything else: `ValueError`).
#[pyfunction]
pub fn undecodable(kind: &str, values: &Bound<'_, PyAny>) -> PyResult<Vec<usize>> {
    let mut owned: Vec<Option<Bound<'_, PyBytes>>> = Vec::new();
    for value in values.try_iter()? {
        owned.push(value?.extract()?);
    }
    let borrowed: Vec<Option<&[u8]>> = owned
        .iter()
        .map(|value| value.as_ref().map(PyBytesMethods::as_bytes))
        .collect();
    stored::undecodable_values(kind, &borrowed).ok_or_else(|| {
        pyo3::exceptions::PyValueError::new_err(format!(
            "unknown kind {kind:?}: \"WorkloadEndpoint\" or \"Profile\""
        ))
    })
}

/// Validates a batch of Profiles for storing, as `epsync.model.validation.normalize_profile`
/// and `PROFILES.encode` do; items and results as in `normalize_endpoints`.
#[pyfunction]
pub fn normalize_profiles<'py>(
    py: Python<'py>,
    items: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyList>> {
    normalize_batch(py, items, stored::normalize_profiles)
}
