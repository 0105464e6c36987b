//! The bodies of list answers: a kind's `List`, or a `meta.k8s.io/v1`
//! Table (what `kubectl get` asks for, with the kind's columns from
//! `c4m_api::table`), serialized straight from the listed objects, which
//! are borrowed rather than copied into a new `Value` (a page of 500
//! instances is not cloned to be written). Fields come in the order a
//! `serde_json::Value` writes them (sorted), so the bytes are the same as
//! those of the equivalent `Value`.

use c4m_core::ResourceKind;
use serde::Serialize;
use serde_json::Value;

/// What a Table row carries besides its cells (`includeObject`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum IncludeObject {
    None,
    Metadata,
    Object,
}

/// A list's `metadata` (`ListMeta`): what is not set is left out.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ListMeta {
    /// The token of the next page.
    #[serde(rename = "continue", skip_serializing_if = "Option::is_none")]
    pub continue_token: Option<String>,
    /// How many items come after this page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remaining_item_count: Option<usize>,
    /// The revision the list was read at.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource_version: Option<String>,
}

/// A kind's list (`PodList`, ...).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct List<'a> {
    api_version: String,
    items: &'a [Value],
    kind: String,
    metadata: ListMeta,
}

impl<'a> List<'a> {
    /// `items` as a list of `kind`.
    pub(crate) fn new(kind: &ResourceKind, items: &'a [Value], metadata: ListMeta) -> Self {
        List {
            api_version: kind.api_version(),
            items,
            kind: format!("{}List", kind.kind),
            metadata,
        }
    }
}

/// A `meta.k8s.io/v1` Table of objects with their kind's columns.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Table<'a> {
    api_version: &'static str,
    column_definitions: Vec<ColumnDefinition>,
    kind: &'static str,
    metadata: ListMeta,
    rows: Vec<Row<'a>>,
}

#[derive(Debug, Serialize)]
struct ColumnDefinition {
    description: &'static str,
    format: &'static str,
    name: &'static str,
    priority: u8,
    #[serde(rename = "type")]
    kind: &'static str,
}

#[derive(Debug, Serialize)]
struct Row<'a> {
    cells: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    object: Option<RowObject<'a>>,
}

#[derive(Debug, Serialize)]
#[serde(untagged)]
enum RowObject<'a> {
    /// A `PartialObjectMetadata`: the object's metadata alone.
    #[serde(rename_all = "camelCase")]
    Metadata {
        api_version: &'static str,
        kind: &'static str,
        metadata: &'a Value,
    },
    Object(&'a Value),
}

impl<'a> Table<'a> {
    /// `items` as a Table of `kind`'s columns, each row carrying what
    /// `include` says.
    pub(crate) fn new(
        kind: &ResourceKind,
        items: &'a [Value],
        metadata: ListMeta,
        include: IncludeObject,
    ) -> Self {
        let columns = c4m_api::table::columns(kind);
        let column_definitions = columns
            .iter()
            .map(|c| ColumnDefinition {
                description: c.description,
                format: if c.name == "NAME" { "name" } else { "" },
                name: c.name,
                priority: c.priority,
                kind: "string",
            })
            .collect();
        let rows = items
            .iter()
            .map(|item| Row {
                cells: columns.iter().map(|c| (c.cell)(item)).collect(),
                object: match include {
                    IncludeObject::None => None,
                    IncludeObject::Metadata => Some(RowObject::Metadata {
                        api_version: "meta.k8s.io/v1",
                        kind: "PartialObjectMetadata",
                        metadata: &item["metadata"],
                    }),
                    IncludeObject::Object => Some(RowObject::Object(item)),
                },
            })
            .collect();
        Table {
            api_version: "meta.k8s.io/v1",
            column_definitions,
            kind: "Table",
            metadata,
            rows,
        }
    }

    /// The Table as a JSON value (one object's, in a GET or a watch event).
    pub(crate) fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment() -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default", "resourceVersion": "5",
                "labels": {"app": "web"}},
            "spec": {"replicas": 2}, "status": {"readyReplicas": 1}})
    }

    /// The Table as it was built as a `Value`: the new one writes the same
    /// bytes.
    fn table_as_value(kind: &ResourceKind, items: &[Value], include: IncludeObject) -> Value {
        let columns = c4m_api::table::columns(kind);
        let definitions: Vec<Value> = columns
            .iter()
            .map(|c| {
                json!({"name": c.name, "type": "string",
                    "format": if c.name == "NAME" { "name" } else { "" },
                    "description": c.description, "priority": c.priority})
            })
            .collect();
        let rows: Vec<Value> = items
            .iter()
            .map(|item| {
                let mut row = json!({"cells": c4m_api::table::row(kind, item)});
                match include {
                    IncludeObject::None => {}
                    IncludeObject::Metadata => {
                        row["object"] = json!({"kind": "PartialObjectMetadata",
                            "apiVersion": "meta.k8s.io/v1", "metadata": item["metadata"]});
                    }
                    IncludeObject::Object => row["object"] = item.clone(),
                }
                row
            })
            .collect();
        json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1",
            "metadata": {"resourceVersion": "7", "continue": "abc", "remainingItemCount": 3},
            "columnDefinitions": definitions, "rows": rows})
    }

    fn page_meta() -> ListMeta {
        ListMeta {
            continue_token: Some("abc".into()),
            remaining_item_count: Some(3),
            resource_version: Some("7".into()),
        }
    }

    #[test]
    fn tables_are_the_bytes_of_the_same_value() {
        let kind = ResourceKind::from_name("deployments").unwrap();
        let items = [
            deployment(),
            json!({"metadata": {"name": "bare"}}),
            json!({}),
        ];
        for include in [
            IncludeObject::None,
            IncludeObject::Metadata,
            IncludeObject::Object,
        ] {
            let table = Table::new(kind, &items, page_meta(), include);
            assert_eq!(
                serde_json::to_string(&table).unwrap(),
                table_as_value(kind, &items, include).to_string(),
                "{include:?}"
            );
        }
        let table = Table::new(
            kind,
            &items[..1],
            ListMeta::default(),
            IncludeObject::Metadata,
        )
        .to_value();
        assert_eq!(table["metadata"], json!({}));
        assert_eq!(table["columnDefinitions"][0]["format"], "name");
        assert_eq!(table["rows"][0]["cells"][1], "1/2");
        assert_eq!(
            table["rows"][0]["object"]["metadata"]["namespace"],
            "default"
        );
    }

    #[test]
    fn lists_are_the_bytes_of_the_same_value() {
        let kind = ResourceKind::from_name("pods").unwrap();
        let items = [
            json!({"metadata": {"name": "a"}}),
            json!({"metadata": {"name": "b"}}),
        ];
        let list = List::new(kind, &items, page_meta());
        let expected = json!({"apiVersion": "v1", "kind": "PodList",
            "metadata": {"resourceVersion": "7", "continue": "abc", "remainingItemCount": 3},
            "items": items});
        assert_eq!(serde_json::to_string(&list).unwrap(), expected.to_string());
        let empty = List::new(kind, &[], ListMeta::default());
        assert_eq!(
            serde_json::to_string(&empty).unwrap(),
            r#"{"apiVersion":"v1","items":[],"kind":"PodList","metadata":{}}"#
        );
    }
}
