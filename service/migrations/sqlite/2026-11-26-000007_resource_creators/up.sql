-- The organisation whose client created each resource (not for admin
-- clients): it keeps seeing what it made, e.g. a Patient a practice posted
-- before its referral, whatever the resource's place on a trail.
CREATE TABLE resource_creators (
    res_type TEXT NOT NULL,
    res_id TEXT NOT NULL,
    organization TEXT NOT NULL,
    PRIMARY KEY (res_type, res_id)
);
