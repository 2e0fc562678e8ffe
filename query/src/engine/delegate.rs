//! The `ScalarUDFImpl` methods a wrapping function passes on unchanged to the DataFusion
//! function it wraps (its `inner: Arc<ScalarUDF>` field): name, aliases, signature, argument
//! coercion, return type, ordering and documentation. The wrapper writes only what it changes
//! (`invoke_with_args`); `simplify` is deliberately not passed on (see its users).

/// Expands to the passed-on methods inside an `impl ScalarUDFImpl for X`.
macro_rules! delegate_scalar_udf_to_inner {
    () => {
        fn name(&self) -> &str {
            self.inner.name()
        }

        fn aliases(&self) -> &[String] {
            self.inner.aliases()
        }

        fn signature(&self) -> &datafusion::logical_expr::Signature {
            self.inner.signature()
        }

        fn coerce_types(
            &self,
            arg_types: &[arrow::datatypes::DataType],
        ) -> datafusion::error::Result<Vec<arrow::datatypes::DataType>> {
            self.inner.coerce_types(arg_types)
        }

        fn return_type(
            &self,
            arg_types: &[arrow::datatypes::DataType],
        ) -> datafusion::error::Result<arrow::datatypes::DataType> {
            self.inner.return_type(arg_types)
        }

        fn return_field_from_args(
            &self,
            args: datafusion::logical_expr::ReturnFieldArgs,
        ) -> datafusion::error::Result<arrow::datatypes::FieldRef> {
            self.inner.return_field_from_args(args)
        }

        fn output_ordering(
            &self,
            inputs: &[datafusion::logical_expr::sort_properties::ExprProperties],
        ) -> datafusion::error::Result<datafusion::logical_expr::sort_properties::SortProperties> {
            self.inner.output_ordering(inputs)
        }

        fn documentation(&self) -> Option<&datafusion::logical_expr::Documentation> {
            self.inner.documentation()
        }
    };
}
