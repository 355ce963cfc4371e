//! The writer (and reader) schemas of [`crate::avro_datum`]: every Avro type sinkd maps,
//! nested, recursive, and resolved across versions.

/// `com.edge.Sample`: doubles, floats, longs, decimals (bytes and fixed), micros, nested
/// records, arrays and maps (as the value-edge test sends).
pub const SAMPLE: &str = r#"{"type":"record","name":"Sample","namespace":"com.edge","fields":[
  {"name":"id","type":"string"},
  {"name":"d","type":"double"},
  {"name":"f","type":"float"},
  {"name":"l","type":"long"},
  {"name":"amount","type":{"type":"bytes","logicalType":"decimal","precision":38,"scale":10}},
  {"name":"at","type":{"type":"long","logicalType":"timestamp-micros"}},
  {"name":"line","type":{"type":"record","name":"Line","fields":[
    {"name":"price","type":{"type":"bytes","logicalType":"decimal","precision":12,"scale":2}},
    {"name":"weight","type":"double"}]}},
  {"name":"lines","type":{"type":"array","items":"Line"}},
  {"name":"cents","type":{"type":"map","values":["null",
    {"type":"fixed","name":"Cents","size":8,"logicalType":"decimal","precision":18,"scale":4}]}}
]}"#;

/// `com.shop.OrderPlaced` as a producer of the fuzz stream writes it (micros, an enum).
pub const ORDER_PLACED: &str = r#"{"type":"record","name":"OrderPlaced","namespace":"com.shop","fields":[
  {"name":"order_id","type":"string"},
  {"name":"placed_at","type":{"type":"long","logicalType":"timestamp-micros"}},
  {"name":"customer","type":"string"},
  {"name":"note","type":["null","string"],"default":null},
  {"name":"status","type":{"type":"enum","name":"Status","symbols":["PLACED","PAID"]}}
]}"#;

/// A later `com.shop.OrderPlaced` as a reader of [`ORDER_PLACED`]: a field renamed (its
/// alias), a new field with a default, an enum symbol added.
const ORDER_PLACED_READER: &str = r#"{"type":"record","name":"OrderPlaced","namespace":"com.shop","fields":[
  {"name":"order_id","type":"string"},
  {"name":"placed_at","type":{"type":"long","logicalType":"timestamp-micros"}},
  {"name":"buyer","type":"string","aliases":["customer"]},
  {"name":"note","type":["null","string"],"default":null},
  {"name":"status","type":{"type":"enum","name":"Status","symbols":["PLACED","PAID","SHIPPED"]}},
  {"name":"channel","type":"string","default":"web"}
]}"#;

/// `com.shop.ItemAdded` v1, read as v2 with its int promoted to long.
const ITEM_ADDED: &str = r#"{"type":"record","name":"ItemAdded","namespace":"com.shop","fields":[
  {"name":"order_id","type":"string"},
  {"name":"quantity","type":"int"},
  {"name":"line_cents","type":"long"}
]}"#;
const ITEM_ADDED_READER: &str = r#"{"type":"record","name":"ItemAdded","namespace":"com.shop","fields":[
  {"name":"order_id","type":"string"},
  {"name":"quantity","type":"long"},
  {"name":"line_cents","type":"double"}
]}"#;

/// `com.fuzz.Node`: a recursive type, unions of several branches, enums, uuids, dates.
const NODE: &str = r#"{"type":"record","name":"Node","namespace":"com.fuzz","fields":[
  {"name":"label","type":["null","string","long","bytes",{"type":"enum","name":"Kind","symbols":["A","B"]}]},
  {"name":"ref","type":{"type":"string","logicalType":"uuid"}},
  {"name":"day","type":{"type":"int","logicalType":"date"}},
  {"name":"next","type":["null","Node"],"default":null},
  {"name":"extra","type":{"type":"map","values":{"type":"array","items":"double"}}}
]}"#;

/// `(writer, reader)` pairs; the schema id of a frame picks one (modulo their number).
pub const ALL: [(&str, Option<&str>); 5] = [
    (SAMPLE, None),
    (ORDER_PLACED, None),
    (ORDER_PLACED, Some(ORDER_PLACED_READER)),
    (ITEM_ADDED, Some(ITEM_ADDED_READER)),
    (NODE, None),
];
