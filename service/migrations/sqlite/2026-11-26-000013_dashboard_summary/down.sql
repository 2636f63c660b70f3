DROP TABLE dash_facts;
DROP TABLE dash_referrals;
