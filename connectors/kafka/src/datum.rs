//! Avro datums into values: the part of decoding that needs a schema but no registry (the
//! decoder finds the schemas; the fuzz targets bring their own).

use std::sync::Arc;

use apache_avro::Schema;
use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::types::Value;
use sinkd_core::decimals::DecimalScales;
use sinkd_core::upcast::reader::resolve_to_reader;

self_cell::self_cell!(
    /// A writer schema and the datum reader that borrows it: the reader resolves the
    /// schema's named types once, not per record (building that resolution per record was
    /// a quarter of the decode time). Both live exactly as long as the cache entry, so a
    /// decoder rebuilt at every task start (pause/resume, a rebuild's shadow, a restart
    /// after a failure) frees its schemas with it.
    struct WriterDatum {
        owner: Schema,
        #[covariant]
        dependent: GenericDatumReader,
    }
);

/// Reads datums of one writer schema into values as sinkd consumes them: resolved to a
/// declared reader schema (its aliases applied) when there is one, and every decimal
/// given its scale ([`DecimalScales`]).
pub struct ValueReader {
    datum: WriterDatum,
    reader: Option<Arc<Schema>>,
    decimals: Option<DecimalScales>,
}

/// Why a datum could not be read.
#[derive(Debug)]
pub enum ReadError {
    /// The bytes are no datum of the writer schema.
    Datum(String),
    /// The value does not resolve to the reader schema.
    Reader(String),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Datum(e) | ReadError::Reader(e) => f.write_str(e),
        }
    }
}

impl ValueReader {
    /// A reader of `writer`'s datums, into values of `reader` if given. An error when the
    /// writer schema's names do not resolve.
    pub fn new(writer: &Schema, reader: Option<Arc<Schema>>) -> Result<ValueReader, String> {
        let datum = WriterDatum::try_new(writer.clone(), |schema| {
            GenericDatumReader::builder(schema).build()
        })
        .map_err(|e| e.to_string())?;
        let decimals = DecimalScales::of(reader.as_deref().unwrap_or(writer));
        Ok(ValueReader {
            datum,
            reader,
            decimals,
        })
    }

    /// The value of one datum (the bytes after the Confluent frame).
    pub fn read(&self, mut datum: &[u8]) -> Result<Value, ReadError> {
        let value = self
            .datum
            .borrow_dependent()
            .read_value(&mut datum)
            .map_err(|e| ReadError::Datum(e.to_string()))?;
        let mut value = match &self.reader {
            Some(reader) => resolve_to_reader(value, reader).map_err(ReadError::Reader)?,
            None => value,
        };
        if let Some(decimals) = &self.decimals {
            decimals.apply(&mut value);
        }
        Ok(value)
    }
}
