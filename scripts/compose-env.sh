# Source this after `docker compose -f docker-compose.test.yml up -d`: it points
# the test suite at the compose stack instead of throwaway local servers.
export GSDR_TEST_S3_ENDPOINT=http://127.0.0.1:19000
export GSDR_TEST_S3_OFFSITE_ENDPOINT=http://127.0.0.1:19100
export GSDR_TEST_S3_ACCESS_KEY=gsdr-test
export GSDR_TEST_S3_SECRET_KEY=gsdr-test-secret
export GSDR_TEST_MONGO_RS_URI="mongodb://127.0.0.1:27117,127.0.0.1:27118,127.0.0.1:27119/?replicaSet=rs0"
export GSDR_TEST_REDIS_SENTINEL=127.0.0.1:26379
export GSDR_TEST_REDIS_PASSWORD=gsdr-test
export GSDR_TEST_PG_URL="postgres://postgres:gsdr-test@127.0.0.1:15432/postgres"
