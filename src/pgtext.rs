//! Fieldless domain enums stored as `text` columns (with a CHECK listing
//! their names): one table of names gives `as_str`, `parse` and the
//! `postgres-types` conversions, so queries bind and read the enum itself
//! instead of converting strings at each call.

/// `text_enum!(Type { Variant => "name", ... })`.
#[macro_export]
macro_rules! text_enum {
    ($t:ty { $($v:ident => $s:literal),+ $(,)? }) => {
        impl $t {
            /// The name stored in the database.
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$v => $s),+ }
            }

            pub fn parse(s: &str) -> Option<Self> {
                match s { $($s => Some(Self::$v),)+ _ => None }
            }
        }

        impl postgres_types::ToSql for $t {
            fn to_sql(
                &self,
                ty: &postgres_types::Type,
                out: &mut bytes::BytesMut,
            ) -> Result<postgres_types::IsNull, Box<dyn std::error::Error + Sync + Send>> {
                self.as_str().to_sql(ty, out)
            }
            fn accepts(ty: &postgres_types::Type) -> bool {
                <&str as postgres_types::ToSql>::accepts(ty)
            }
            postgres_types::to_sql_checked!();
        }

        impl<'a> postgres_types::FromSql<'a> for $t {
            fn from_sql(
                ty: &postgres_types::Type,
                raw: &'a [u8],
            ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
                let s = <&str as postgres_types::FromSql>::from_sql(ty, raw)?;
                Self::parse(s)
                    .ok_or_else(|| format!("unknown {} {s:?} in the database", stringify!($t)).into())
            }
            fn accepts(ty: &postgres_types::Type) -> bool {
                <&str as postgres_types::FromSql>::accepts(ty)
            }
        }
    };
}
