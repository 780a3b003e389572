"""Transform stage: build the dbt project (raw lake -> staging -> marts) and read its marts.

``recsys.transform.dbt`` runs ``dbt build``; ``recsys.transform.warehouse`` reads the marts from the configured
warehouse; ``recsys.transform.postgres`` connects to the PostgreSQL warehouse and loads the raw tables. This
package re-exports nothing, so importing one of them (the service reads none) does not import the others.
"""
