//! The PyO3 layer: thin wrappers that convert arguments, call the core and convert results.
//!
//! Every call takes or returns a whole batch (many endpoints, many label sets, a whole page
//! of keys), so Python crosses the boundary once per operation, never once per label.

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyMapping, PyString};

use crate::error::selector_error;
use crate::index::{EndpointEntry, EndpointIndex, Filter, LabelMap};
use crate::selector::Selector;

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
        }
    }

    /// Inserts `(namespace, name, node, own_labels, profile_names)` entries, each replacing
    /// any previous entry for `(namespace, name)`. The batch is converted before any of it
    /// is applied, so a bad entry changes nothing.
    fn upsert_endpoints(&mut self, endpoints: &Bound<'_, PyAny>) -> PyResult<()> {
        let mut entries = Vec::new();
        for item in endpoints.try_iter()? {
            let (namespace, name, node, labels, profiles): (
                String,
                String,
                String,
                Bound<'_, PyAny>,
                Vec<String>,
            ) = item?.extract()?;
            entries.push(EndpointEntry {
                namespace,
                name,
                node,
                labels: extract_labels(&labels)?,
                profiles,
            });
        }
        self.inner.upsert_endpoints(entries);
        Ok(())
    }

    /// Removes endpoints by `(namespace, name)`; missing keys are ignored.
    fn remove_endpoints(&mut self, keys: Vec<(String, String)>) {
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
            entries.push((name, extract_labels(&labels)?));
        }
        self.inner.upsert_profiles(entries);
        Ok(())
    }

    /// Removes profiles by name (missing names are ignored) and re-evaluates the effective
    /// labels of the endpoints that name them.
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
        after: Option<(String, String)>,
        limit: usize,
    ) -> PyResult<Bound<'py, PyList>> {
        let filter = Filter {
            namespace,
            node,
            selector: selector_of(selector),
        };
        let after = after
            .as_ref()
            .map(|(namespace, name)| (namespace.as_str(), name.as_str()));
        let keys = self.inner.query(filter, after, limit);
        PyList::new(
            py,
            keys.into_iter()
                .map(|(namespace, name)| (namespace.as_str(), name.as_str())),
        )
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

    fn __len__(&self) -> usize {
        self.inner.len()
    }
}
