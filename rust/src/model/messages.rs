//! The resources as protobuf messages, mirroring `proto/epsync/v1/object_meta.proto`,
//! `workload_endpoint.proto` and `profile.proto` (and `google/protobuf/timestamp.proto`),
//! field for field and number for number.
//!
//! Written by hand with `prost` (no code generation step): the structs are few, and a test
//! in Python checks that bytes Python encoded pass through them unchanged.
//!
//! Encoding is byte for byte Python's `SerializeToString(deterministic=True)` (upb): fields
//! in number order, map entries in upb's sorted order (maps are `BTreeMap`s; see
//! [`encode_map`] for the one twist). The two messages with a map, [`ObjectMeta`] and
//! [`ProfileSpec`], implement [`Message`] by hand rather than by derive: `prost` leaves an
//! empty key or value out of a map entry while upb always writes both (a label with an
//! empty value, which is valid, would otherwise encode differently), and `prost` writes
//! entries in plain key order. Decoding is `prost`'s own.
//!
//! Unknown fields are dropped on decode (`prost` keeps none); Python would keep and re-encode
//! them. Only a client built from a newer schema sends any.

use std::collections::BTreeMap;

use prost::Message;
use prost::bytes::{Buf, BufMut};
use prost::encoding::{
    DecodeContext, WireType, btree_map, encode_key, encode_varint, encoded_len_varint, int64,
    key_len, message, skip_field, string,
};

/// A string map (`map<string, string>`) as it is stored.
pub type Labels = BTreeMap<String, String>;

/// `google.protobuf.Timestamp`.
#[derive(Clone, Copy, PartialEq, Eq, Message)]
pub struct Timestamp {
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

/// `epsync.v1.ObjectMeta`.
#[derive(Clone, PartialEq, Default, Debug)]
pub struct ObjectMeta {
    /// 1
    pub name: String,
    /// 2
    pub namespace: String,
    /// 3
    pub labels: Labels,
    /// 4
    pub resource_version: i64,
    /// 5
    pub uid: String,
    /// 6
    pub creation_timestamp: Option<Timestamp>,
    /// 7
    pub annotations: Labels,
}

/// `epsync.v1.WorkloadEndpoint`.
#[derive(Clone, PartialEq, Message)]
pub struct WorkloadEndpoint {
    #[prost(message, optional, tag = "1")]
    pub metadata: Option<ObjectMeta>,
    #[prost(message, optional, tag = "2")]
    pub spec: Option<WorkloadEndpointSpec>,
}

/// `epsync.v1.WorkloadEndpointSpec`.
#[derive(Clone, PartialEq, Message)]
pub struct WorkloadEndpointSpec {
    #[prost(string, tag = "1")]
    pub workload: String,
    #[prost(string, tag = "2")]
    pub orchestrator: String,
    #[prost(string, tag = "3")]
    pub node: String,
    #[prost(string, tag = "4")]
    pub container_id: String,
    #[prost(string, tag = "5")]
    pub pod: String,
    #[prost(string, tag = "6")]
    pub endpoint: String,
    #[prost(string, repeated, tag = "7")]
    pub ip_networks: Vec<String>,
    #[prost(message, repeated, tag = "8")]
    pub ip_nats: Vec<Ipnat>,
    #[prost(string, repeated, tag = "9")]
    pub aws_elastic_ips: Vec<String>,
    #[prost(string, tag = "10")]
    pub ipv4_gateway: String,
    #[prost(string, tag = "11")]
    pub ipv6_gateway: String,
    #[prost(string, repeated, tag = "12")]
    pub profiles: Vec<String>,
    #[prost(string, tag = "13")]
    pub interface_name: String,
    #[prost(string, tag = "14")]
    pub mac: String,
    #[prost(message, repeated, tag = "15")]
    pub ports: Vec<WorkloadEndpointPort>,
    #[prost(string, repeated, tag = "16")]
    pub allow_spoofed_source_prefixes: Vec<String>,
    #[prost(string, tag = "17")]
    pub service_account_name: String,
    #[prost(message, optional, tag = "18")]
    pub qos_controls: Option<QoSControls>,
}

/// `epsync.v1.QoSControls`.
#[derive(Clone, PartialEq, Message)]
pub struct QoSControls {
    #[prost(int64, tag = "1")]
    pub ingress_bandwidth: i64,
    #[prost(int64, tag = "2")]
    pub ingress_burst: i64,
    #[prost(int64, tag = "3")]
    pub ingress_peakrate: i64,
    #[prost(int64, tag = "4")]
    pub ingress_minburst: i64,
    #[prost(int64, tag = "5")]
    pub egress_bandwidth: i64,
    #[prost(int64, tag = "6")]
    pub egress_burst: i64,
    #[prost(int64, tag = "7")]
    pub egress_peakrate: i64,
    #[prost(int64, tag = "8")]
    pub egress_minburst: i64,
    #[prost(int64, tag = "9")]
    pub ingress_packet_rate: i64,
    #[prost(int64, tag = "10")]
    pub ingress_packet_burst: i64,
    #[prost(int64, tag = "11")]
    pub egress_packet_rate: i64,
    #[prost(int64, tag = "12")]
    pub egress_packet_burst: i64,
    #[prost(int64, tag = "13")]
    pub ingress_max_connections: i64,
    #[prost(int64, tag = "14")]
    pub egress_max_connections: i64,
    #[prost(string, tag = "15")]
    pub dscp: String,
}

/// `epsync.v1.IPNAT`.
#[derive(Clone, PartialEq, Message)]
pub struct Ipnat {
    #[prost(string, tag = "1")]
    pub internal_ip: String,
    #[prost(string, tag = "2")]
    pub external_ip: String,
}

/// `epsync.v1.WorkloadEndpointPort`.
#[derive(Clone, PartialEq, Message)]
pub struct WorkloadEndpointPort {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub protocol: String,
    #[prost(int32, tag = "3")]
    pub port: i32,
    #[prost(int32, tag = "4")]
    pub host_port: i32,
    #[prost(string, tag = "5")]
    pub host_ip: String,
}

/// `epsync.v1.Profile`.
#[derive(Clone, PartialEq, Message)]
pub struct Profile {
    #[prost(message, optional, tag = "1")]
    pub metadata: Option<ObjectMeta>,
    #[prost(message, optional, tag = "2")]
    pub spec: Option<ProfileSpec>,
}

/// `epsync.v1.ProfileSpec`.
#[derive(Clone, PartialEq, Default, Debug)]
pub struct ProfileSpec {
    /// 1
    pub labels_to_apply: Labels,
}

// ---- map fields, encoded as upb encodes them ----

/// The encoded length of a string field, written even when empty.
fn string_field_len(tag: u32, value: &str) -> usize {
    key_len(tag) + encoded_len_varint(value.len() as u64) + value.len()
}

/// The length of one map entry's body: key (field 1) and value (field 2), both always written.
fn entry_len(key: &str, value: &str) -> usize {
    string_field_len(1, key) + string_field_len(2, value)
}

fn put_string_field(tag: u32, value: &str, buf: &mut impl BufMut) {
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(value.len() as u64, buf);
    buf.put_slice(value.as_bytes());
}

fn put_entry(tag: u32, key: &str, value: &str, buf: &mut impl BufMut) {
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(entry_len(key, value) as u64, buf);
    put_string_field(1, key, buf);
    put_string_field(2, value, buf);
}

/// Encodes a `map<string, string>` field in upb's deterministic order: by bytes, except
/// that a key comes after every key it is a prefix of (`"ab"`, `"a"`, `"b"`, and `""`
/// last). upb sorts the entries in reverse and writes its buffer back to front, which puts
/// a prefix after its extensions.
fn encode_map(tag: u32, map: &Labels, buf: &mut impl BufMut) {
    // The keys a key is a prefix of follow it directly in byte order, so when no key is a
    // prefix of the next one, byte order is upb's order.
    let plain = map
        .keys()
        .zip(map.keys().skip(1))
        .all(|(previous, key)| !key.starts_with(previous.as_str()));
    if plain {
        for (key, value) in map {
            put_entry(tag, key, value, buf);
        }
        return;
    }
    // Post-order over the tree of prefixes: a key waits until the keys it prefixes are out.
    let mut waiting: Vec<(&String, &String)> = Vec::new();
    for (key, value) in map {
        while let Some((top, top_value)) = waiting.last().copied()
            && !key.starts_with(top.as_str())
        {
            put_entry(tag, top, top_value, buf);
            waiting.pop();
        }
        waiting.push((key, value));
    }
    while let Some((key, value)) = waiting.pop() {
        put_entry(tag, key, value, buf);
    }
}

fn encoded_map_len(tag: u32, map: &Labels) -> usize {
    map.iter()
        .map(|(key, value)| {
            let len = entry_len(key, value);
            key_len(tag) + encoded_len_varint(len as u64) + len
        })
        .sum()
}

fn merge_map(
    map: &mut Labels,
    buf: &mut impl Buf,
    ctx: DecodeContext,
) -> Result<(), prost::DecodeError> {
    btree_map::merge(string::merge, string::merge, map, buf, ctx)
}

/// Fails unless a field arrived with the wire type its declaration gives it (as derived
/// messages do).
fn expect_wire_type(actual: WireType, expected: WireType) -> Result<(), prost::DecodeError> {
    prost::encoding::check_wire_type(expected, actual)
}

impl Message for ObjectMeta {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        if !self.name.is_empty() {
            put_string_field(1, &self.name, buf);
        }
        if !self.namespace.is_empty() {
            put_string_field(2, &self.namespace, buf);
        }
        encode_map(3, &self.labels, buf);
        if self.resource_version != 0 {
            int64::encode(4, &self.resource_version, buf);
        }
        if !self.uid.is_empty() {
            put_string_field(5, &self.uid, buf);
        }
        if let Some(timestamp) = &self.creation_timestamp {
            message::encode(6, timestamp, buf);
        }
        encode_map(7, &self.annotations, buf);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        const NAME: &str = "ObjectMeta";
        let (result, field) = match tag {
            1 => (string::merge(wire_type, &mut self.name, buf, ctx), "name"),
            2 => (
                string::merge(wire_type, &mut self.namespace, buf, ctx),
                "namespace",
            ),
            3 => (
                expect_wire_type(wire_type, WireType::LengthDelimited)
                    .and_then(|()| merge_map(&mut self.labels, buf, ctx)),
                "labels",
            ),
            4 => (
                int64::merge(wire_type, &mut self.resource_version, buf, ctx),
                "resource_version",
            ),
            5 => (string::merge(wire_type, &mut self.uid, buf, ctx), "uid"),
            6 => (
                message::merge(
                    wire_type,
                    self.creation_timestamp.get_or_insert_default(),
                    buf,
                    ctx,
                ),
                "creation_timestamp",
            ),
            7 => (
                expect_wire_type(wire_type, WireType::LengthDelimited)
                    .and_then(|()| merge_map(&mut self.annotations, buf, ctx)),
                "annotations",
            ),
            _ => return skip_field(wire_type, tag, buf, ctx),
        };
        result.map_err(|mut error| {
            error.push(NAME, field);
            error
        })
    }

    fn encoded_len(&self) -> usize {
        let mut len = 0;
        if !self.name.is_empty() {
            len += string_field_len(1, &self.name);
        }
        if !self.namespace.is_empty() {
            len += string_field_len(2, &self.namespace);
        }
        len += encoded_map_len(3, &self.labels);
        if self.resource_version != 0 {
            len += int64::encoded_len(4, &self.resource_version);
        }
        if !self.uid.is_empty() {
            len += string_field_len(5, &self.uid);
        }
        if let Some(timestamp) = &self.creation_timestamp {
            len += message::encoded_len(6, timestamp);
        }
        len += encoded_map_len(7, &self.annotations);
        len
    }

    fn clear(&mut self) {
        *self = Self::default();
    }
}

impl Message for ProfileSpec {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        encode_map(1, &self.labels_to_apply, buf);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        if tag != 1 {
            return skip_field(wire_type, tag, buf, ctx);
        }
        expect_wire_type(wire_type, WireType::LengthDelimited)
            .and_then(|()| merge_map(&mut self.labels_to_apply, buf, ctx))
            .map_err(|mut error| {
                error.push("ProfileSpec", "labels_to_apply");
                error
            })
    }

    fn encoded_len(&self) -> usize {
        encoded_map_len(1, &self.labels_to_apply)
    }

    fn clear(&mut self) {
        self.labels_to_apply.clear();
    }
}
