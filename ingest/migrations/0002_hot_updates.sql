-- Every batch updates each of its meters' high-water mark and daily row.
-- With full pages those updates cannot be HOT (heap-only): each writes a new
-- tuple on another page plus an entry in every index. Leaving room on each
-- page keeps them HOT. Applies to pages written from now on (an existing
-- installation may `VACUUM FULL` both tables once, off-peak).
ALTER TABLE metering.meters SET (fillfactor = 50);
ALTER TABLE metering.daily SET (fillfactor = 70);
