//! Master data (billing owns it): customers, premises (수용가), meters and
//! their installations over time, and the import of a utility's export.
