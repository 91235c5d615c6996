//! Cedar values built directly from the JSON forms a question is written
//! in (context, entities), with the entity type names parsed once: the
//! JSON parsers Cedar offers cost tens of microseconds per question,
//! these a few.

use crate::schema::NAMESPACE;
use cedar_policy::{Context, Entity, EntityId, EntityTypeName, EntityUid, RestrictedExpression};
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::str::FromStr;

/// The entity type names of the schema, parsed once.
#[derive(Debug, Clone)]
pub struct Types {
    by_name: HashMap<String, EntityTypeName>,
    action: EntityTypeName,
}

impl Types {
    pub fn new() -> Self {
        let mut names: Vec<&str> = vec!["Group", "Person", "Runbook", "Plugin", "Step"];
        names.extend(
            runbook_core::grants::Interface::ALL
                .iter()
                .map(|&i| crate::schema::resource_type(i)),
        );
        let parse = |n: &str| {
            EntityTypeName::from_str(&format!("{NAMESPACE}::{n}"))
                .unwrap_or_else(|_| unreachable!("the schema's type names parse"))
        };
        Self {
            by_name: names
                .into_iter()
                .map(|n| (n.to_string(), parse(n)))
                .collect(),
            action: parse("Action"),
        }
    }

    /// `Runbook::<ty>::"<id>"`; `ty` is one of the schema's types.
    pub fn uid(&self, ty: &str, id: &str) -> EntityUid {
        let ty = self
            .by_name
            .get(ty)
            .cloned()
            .unwrap_or_else(|| unreachable!("`{ty}` is not a type of the schema"));
        EntityUid::from_type_name_and_id(ty, EntityId::new(id))
    }

    pub fn action(&self, name: &str) -> EntityUid {
        EntityUid::from_type_name_and_id(self.action.clone(), EntityId::new(name))
    }

    /// An entity reference of the JSON form: `{"type": "Runbook::Step", "id": "…"}`.
    fn reference(&self, v: &Value) -> Result<EntityUid, String> {
        let ty = v["type"]
            .as_str()
            .ok_or("an entity reference without `type`")?;
        let id = v["id"].as_str().ok_or("an entity reference without `id`")?;
        let short = ty
            .strip_prefix(NAMESPACE)
            .and_then(|t| t.strip_prefix("::"))
            .ok_or_else(|| format!("`{ty}` is not of the `{NAMESPACE}` namespace"))?;
        if !self.by_name.contains_key(short) {
            return Err(format!("`{ty}` is not a type of the schema"));
        }
        Ok(self.uid(short, id))
    }

    /// A value: strings, whole numbers, booleans, sets, records and
    /// `{"__entity": …}` references.
    pub fn expr(&self, v: &Value) -> Result<RestrictedExpression, String> {
        Ok(match v {
            Value::String(s) => RestrictedExpression::new_string(s.clone()),
            Value::Bool(b) => RestrictedExpression::new_bool(*b),
            Value::Number(n) => RestrictedExpression::new_long(
                n.as_i64()
                    .ok_or_else(|| format!("`{n}` is not a whole number"))?,
            ),
            Value::Array(a) => RestrictedExpression::new_set(
                a.iter()
                    .map(|v| self.expr(v))
                    .collect::<Result<Vec<_>, _>>()?,
            ),
            Value::Object(o) if o.contains_key("__entity") => {
                RestrictedExpression::new_entity_uid(self.reference(&o["__entity"])?)
            }
            Value::Object(o) => RestrictedExpression::new_record(
                o.iter()
                    .map(|(k, v)| Ok((k.clone(), self.expr(v)?)))
                    .collect::<Result<Vec<_>, String>>()?,
            )
            .map_err(|e| e.to_string())?,
            Value::Null => return Err("a null value".into()),
        })
    }

    pub fn context(&self, v: &Value) -> Result<Context, String> {
        let o = v.as_object().ok_or("the context is not a record")?;
        let pairs = o
            .iter()
            .map(|(k, v)| Ok((k.clone(), self.expr(v)?)))
            .collect::<Result<Vec<_>, String>>()?;
        Context::from_pairs(pairs).map_err(|e| e.to_string())
    }

    /// An entity of the JSON form: `{"uid", "attrs", "parents"}`.
    pub fn entity(&self, v: &Value) -> Result<Entity, String> {
        let uid = self.reference(&v["uid"])?;
        let attrs = v["attrs"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| Ok((k.clone(), self.expr(v)?)))
            .collect::<Result<HashMap<_, _>, String>>()?;
        let parents = v["parents"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| self.reference(p))
            .collect::<Result<HashSet<_>, _>>()?;
        Entity::new(uid, attrs, parents).map_err(|e| e.to_string())
    }
}

impl Default for Types {
    fn default() -> Self {
        Self::new()
    }
}
