//! `#[derive(JobParams)]`: a job type's parameters as one struct, each field
//! one parameter (see `ingest_model::typed`). The field's name is the
//! parameter's name, its `///` comment the help text, its type the kind
//! (`Option<T>`: may be absent), and `#[param(...)]` the rest:
//!
//! - `default = <expr>`: the default (any `json!` value); a field that is
//!   neither an `Option` nor defaulted is required;
//! - `min = <n>`, `max = <n>`: bounds (a list: fewest items for `min`);
//! - `max_length = <n>`: most characters (a list: most items);
//! - `pattern = <expr>`: a regular expression each value (each item) matches;
//! - `allowed = <expr>`: the allowed values (a list: allowed items).
//!
//! On the struct, `#[params(rule = <expr>)]` adds a rule across parameters
//! (an `ingest_model::ParamRule`).
//!
//! `#[derive(ParamEnum)]` makes a fieldless enum (with `Serialize`) a
//! parameter kind whose allowed values are its variants as serde names them.

use proc_macro::TokenStream;
use proc_macro2::TokenStream as Tokens;
use quote::quote;
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::{Data, DeriveInput, Expr, Fields, GenericArgument, Meta, PathArguments, Token, Type, parse_macro_input};

#[proc_macro_derive(JobParams, attributes(param, params))]
pub fn derive_job_params(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    job_params(&input).unwrap_or_else(syn::Error::into_compile_error).into()
}

#[proc_macro_derive(ParamEnum)]
pub fn derive_param_enum(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    param_enum(&input).unwrap_or_else(syn::Error::into_compile_error).into()
}

fn job_params(input: &DeriveInput) -> syn::Result<Tokens> {
    let Data::Struct(data) = &input.data else {
        return Err(syn::Error::new_spanned(input, "JobParams: a struct with named fields, one per parameter"));
    };
    let Fields::Named(fields) = &data.fields else {
        return Err(syn::Error::new_spanned(input, "JobParams: a struct with named fields, one per parameter"));
    };
    let mut specs = Vec::new();
    for field in &fields.named {
        specs.push(param_spec(field)?);
    }
    let mut rules = Vec::new();
    for attr in input.attrs.iter().filter(|a| a.path().is_ident("params")) {
        for (key, value) in key_values(attr)? {
            match (key.as_str(), value) {
                ("rule", Some(rule)) => rules.push(rule),
                _ => return Err(syn::Error::new_spanned(attr, "#[params(rule = <ParamRule>)] is the only form")),
            }
        }
    }
    let name = &input.ident;
    let (impl_generics, type_generics, where_clause) = input.generics.split_for_impl();
    Ok(quote! {
        impl #impl_generics ::ingest_model::JobParams for #name #type_generics #where_clause {
            fn param_specs() -> ::std::vec::Vec<::ingest_model::ParamSpec> {
                ::std::vec![#(#specs),*]
            }
            fn rules() -> ::std::vec::Vec<::ingest_model::ParamRule> {
                ::std::vec![#(#rules),*]
            }
        }
    })
}

/// The expression building one field's `ParamSpec`.
fn param_spec(field: &syn::Field) -> syn::Result<Tokens> {
    let ident = field.ident.as_ref().ok_or_else(|| syn::Error::new_spanned(field, "a named field"))?;
    let name = ident.to_string();
    let doc = doc_comment(&field.attrs);
    if doc.is_empty() {
        return Err(syn::Error::new_spanned(ident, "every parameter needs a /// comment: it is the form's help text"));
    }
    let (ty, optional) = match option_inner(&field.ty) {
        Some(inner) => (inner, true),
        None => (&field.ty, false),
    };
    let mut settings = Vec::new();
    let mut defaulted = false;
    for attr in field.attrs.iter().filter(|a| a.path().is_ident("param")) {
        for (key, value) in key_values(attr)? {
            let Some(value) = value else {
                return Err(syn::Error::new_spanned(attr, format!("#[param({key} = ...)] needs a value")));
            };
            settings.push(match key.as_str() {
                "default" => {
                    defaulted = true;
                    quote! { spec.default = ::std::option::Option::Some(::ingest_model::typed::json!(#value)); }
                }
                "min" => quote! { spec.minimum = ::std::option::Option::Some((#value) as f64); },
                "max" => quote! { spec.maximum = ::std::option::Option::Some((#value) as f64); },
                "max_length" => quote! { spec.max_length = ::std::option::Option::Some(#value); },
                "pattern" => quote! { spec.pattern = ::std::option::Option::Some((#value).to_string()); },
                "allowed" => quote! {
                    spec.allowed_values = (#value).iter().map(|v| v.to_string()).collect();
                },
                other => {
                    return Err(syn::Error::new_spanned(
                        attr,
                        format!("unknown #[param({other})]: default, min, max, max_length, pattern or allowed"),
                    ));
                }
            });
        }
    }
    if optional && defaulted {
        return Err(syn::Error::new_spanned(ident, "a defaulted parameter is never absent: drop the Option"));
    }
    let required = !optional && !defaulted;
    Ok(quote! {{
        let mut spec = ::ingest_model::ParamSpec::new(
            #name,
            <#ty as ::ingest_model::ParamType>::KIND,
            #doc,
        );
        spec.allowed_values = <#ty as ::ingest_model::ParamType>::allowed();
        spec.required = #required;
        #(#settings)*
        spec
    }})
}

/// `#[attr(key = value, flag, ...)]` as pairs.
fn key_values(attr: &syn::Attribute) -> syn::Result<Vec<(String, Option<Expr>)>> {
    let Meta::List(list) = &attr.meta else {
        return Err(syn::Error::new_spanned(attr, "expected #[param(key = value, ...)]"));
    };
    let metas = Punctuated::<Meta, Token![,]>::parse_terminated.parse2(list.tokens.clone())?;
    metas
        .into_iter()
        .map(|meta| match meta {
            Meta::NameValue(pair) => Ok((path_name(&pair.path)?, Some(pair.value))),
            Meta::Path(path) => Ok((path_name(&path)?, None)),
            Meta::List(list) => Err(syn::Error::new_spanned(list, "expected key = value")),
        })
        .collect()
}

fn path_name(path: &syn::Path) -> syn::Result<String> {
    path.get_ident().map(ToString::to_string).ok_or_else(|| syn::Error::new_spanned(path, "expected a name"))
}

/// The `///` lines, trimmed and joined by spaces.
fn doc_comment(attrs: &[syn::Attribute]) -> String {
    let lines: Vec<String> = attrs
        .iter()
        .filter(|a| a.path().is_ident("doc"))
        .filter_map(|a| match &a.meta {
            Meta::NameValue(pair) => match &pair.value {
                Expr::Lit(syn::ExprLit { lit: syn::Lit::Str(s), .. }) => Some(s.value().trim().to_string()),
                _ => None,
            },
            _ => None,
        })
        .filter(|line| !line.is_empty())
        .collect();
    lines.join(" ")
}

/// `T` of `Option<T>`.
fn option_inner(ty: &Type) -> Option<&Type> {
    let Type::Path(path) = ty else { return None };
    let last = path.path.segments.last()?;
    if last.ident != "Option" {
        return None;
    }
    let PathArguments::AngleBracketed(args) = &last.arguments else { return None };
    match args.args.first()? {
        GenericArgument::Type(inner) => Some(inner),
        _ => None,
    }
}

fn param_enum(input: &DeriveInput) -> syn::Result<Tokens> {
    let Data::Enum(data) = &input.data else {
        return Err(syn::Error::new_spanned(input, "ParamEnum: an enum of unit variants"));
    };
    let mut variants = Vec::new();
    for variant in &data.variants {
        if !matches!(variant.fields, Fields::Unit) {
            return Err(syn::Error::new_spanned(variant, "ParamEnum: unit variants only"));
        }
        variants.push(&variant.ident);
    }
    let name = &input.ident;
    Ok(quote! {
        impl ::ingest_model::ParamType for #name {
            const KIND: ::ingest_model::ParamKind = ::ingest_model::ParamKind::Enum;
            fn allowed() -> ::std::vec::Vec<::std::string::String> {
                ::std::vec![#(::ingest_model::typed::variant_name(&#name::#variants)),*]
            }
        }
    })
}
