-- Charset for recipients at Japanese mobile carriers (docomo, au/ezweb, SoftBank, Y!mobile):
-- NULL follows the engine's site policy; 'iso-2022-jp' (7bit) or 'utf-8' decide per campaign.
ALTER TABLE campaigns
    ADD COLUMN mobile_charset TEXT CHECK (mobile_charset IN ('utf-8', 'iso-2022-jp'));
