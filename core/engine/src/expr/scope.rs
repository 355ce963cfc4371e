//! The variables of an evaluation: an event's fields, each converted for CEL at most once
//! per event however many expressions read it, and a child row's `item` and `index`.
//!
//! Converting is most of an expression's cost (an array of records becomes a list of
//! maps), so a [`Scope`] is made once per event and shared by its rule's condition, key,
//! columns and child rows; a [`Bound`] adds a child row's element, converted once per
//! element.

use std::sync::OnceLock;

use apache_avro::types::Value;
use cel::Value as Cel;
use cel::common::value::{CowVal, Val};
use cel::context::VariableResolver;

use super::to_cel;

/// An event's fields, converted on first use.
pub struct Scope<'a> {
    fields: &'a [(String, Value)],
    converted: Vec<OnceLock<Option<Box<dyn Val>>>>,
}

impl<'a> Scope<'a> {
    /// The scope of an event's top-level fields.
    pub fn new(fields: &'a [(String, Value)]) -> Scope<'a> {
        Scope {
            fields,
            converted: fields.iter().map(|_| OnceLock::new()).collect(),
        }
    }

    /// The fields themselves.
    pub fn fields(&self) -> &'a [(String, Value)] {
        self.fields
    }

    /// The fields alone, as variables.
    pub fn plain(&self) -> Bound<'_, 'a> {
        Bound {
            scope: self,
            extra: Vec::new(),
            element: None,
        }
    }

    /// The fields and `extra` variables, which take precedence over fields of the same
    /// name. A value CEL cannot hold is left out.
    pub fn bind(&self, extra: Vec<(&'static str, Cel)>) -> Bound<'_, 'a> {
        Bound {
            scope: self,
            extra: extra
                .into_iter()
                .filter_map(|(name, v)| Some((name, Box::<dyn Val>::try_from(v).ok()?)))
                .collect(),
            element: None,
        }
    }

    /// The fields and an element of one of their arrays as `item` (converted for CEL only
    /// if an expression reads it whole) with its position as `index`.
    pub fn bind_element<'s>(&'s self, item: &'s Value, index: i64) -> Bound<'s, 'a> {
        let index_val = Box::<dyn Val>::try_from(Cel::Int(index)).ok();
        Bound {
            scope: self,
            extra: index_val.map(|v| ("index", v)).into_iter().collect(),
            element: Some(Element {
                value: item,
                index,
                converted: OnceLock::new(),
            }),
        }
    }

    fn field(&self, name: &str) -> Option<&dyn Val> {
        let i = self.fields.iter().position(|(n, _)| n == name)?;
        // A field CEL cannot read (a decimal) stays unresolved; the caller says why.
        self.converted[i]
            .get_or_init(|| to_cel(&self.fields[i].1).ok()?.try_into().ok())
            .as_deref()
    }
}

/// An array element bound as `item`.
struct Element<'s> {
    value: &'s Value,
    index: i64,
    converted: OnceLock<Option<Box<dyn Val>>>,
}

/// A scope with a child row's variables: what an expression is evaluated in.
pub struct Bound<'s, 'a> {
    scope: &'s Scope<'a>,
    extra: Vec<(&'static str, Box<dyn Val>)>,
    element: Option<Element<'s>>,
}

impl<'s, 'a> Bound<'s, 'a> {
    /// The event's fields.
    pub fn fields(&self) -> &'a [(String, Value)] {
        self.scope.fields
    }

    /// The bound array element (`item`) and its position (`index`), when the element is
    /// one of the event's own values.
    pub fn element(&self) -> Option<(&'s Value, i64)> {
        self.element.as_ref().map(|e| (e.value, e.index))
    }

    /// Whether `item` is bound to a value computed by CEL (not one of the event's own).
    pub fn has_computed_item(&self) -> bool {
        self.extra.iter().any(|(n, _)| *n == "item")
    }
}

impl VariableResolver for Bound<'_, '_> {
    fn resolve<'b>(&'b self, variable: &str) -> Option<CowVal<'b, 'b>> {
        if let Some((_, v)) = self.extra.iter().find(|(n, _)| *n == variable) {
            return Some(CowVal::Borrowed(v.as_ref()));
        }
        if variable == "item"
            && let Some(e) = &self.element
        {
            return e
                .converted
                .get_or_init(|| to_cel(e.value).ok()?.try_into().ok())
                .as_deref()
                .map(CowVal::Borrowed);
        }
        self.scope.field(variable).map(CowVal::Borrowed)
    }
}
